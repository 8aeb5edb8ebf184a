//! [`LanedStore`]: one server store over several, each key in one of them
//! (a lane), so that merges of different keys commit in parallel — each
//! redb file has its own writer thread and its own fsync.

use super::{ChangeFeed, LaneMerge, ServerStore};
use futures_util::future::join_all;
use std::collections::VecDeque;
use std::sync::Arc;
use topgun_core::merkle::MerkleTree;
use topgun_core::Timestamp;
use topgun_storage::{KeyStamp, Paged, StorageError, StoreRecord};

/// A [`ServerStore`] whose keys are spread over several stores (lanes) by
/// their Merkle leaf, so the keys of one leaf live in one lane. A merge is
/// split by lane and the lanes merge at once.
///
/// Invalid records fail the whole merge before any lane is touched. An
/// I/O error in one lane does not undo the others' commits (separate
/// files cannot commit together): [`ServerStore::merge`] then fails while
/// the other lanes' records are stored, and
/// [`ServerStore::merge_lanes`] says which.
///
/// The lane of a key depends on the number of lanes: a store must always
/// be opened with the lanes it was created with.
#[derive(Debug, Clone)]
pub struct LanedStore {
    lanes: Vec<Arc<dyn ServerStore>>,
}

impl LanedStore {
    /// The store over `lanes`, in this order (at least one).
    ///
    /// # Panics
    /// If `lanes` is empty.
    pub fn new(lanes: Vec<Arc<dyn ServerStore>>) -> Self {
        assert!(!lanes.is_empty(), "a laned store needs a lane");
        Self { lanes }
    }

    /// The lane that keeps `key` (of any map).
    pub fn lane_of(&self, key: &str) -> usize {
        // A leaf's keys share a lane: a leaf request reads one lane.
        MerkleTree::leaf_of(key) % self.lanes.len()
    }

    /// `items` (each with its lane) by lane: for each lane that has some,
    /// the lane, their input positions and the items, in input order.
    fn split<T>(
        &self,
        items: impl Iterator<Item = (usize, T)>,
    ) -> Vec<(&dyn ServerStore, Vec<usize>, Vec<T>)> {
        let mut parts: Vec<(Vec<usize>, Vec<T>)> = (0..self.lanes.len())
            .map(|_| (Vec::new(), Vec::new()))
            .collect();
        for (at, (lane, item)) in items.enumerate() {
            parts[lane].0.push(at);
            parts[lane].1.push(item);
        }
        self.lanes
            .iter()
            .zip(parts)
            .filter(|(_, (positions, _))| !positions.is_empty())
            .map(|(lane, (positions, items))| (&**lane, positions, items))
            .collect()
    }

    /// Pages of every lane after `after`, merged into key order: the first
    /// `limit` items. Keys spread evenly over the lanes, so each lane is
    /// read in runs of about its share of `limit`, and a lane is read on
    /// only when its run is used up: the lanes' items are read about once,
    /// not once per lane.
    async fn merged_page<T: Page>(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StorageError> {
        let lanes = self.lanes.len();
        let run = (limit / lanes)
            .saturating_add(limit / (4 * lanes))
            .saturating_add(16)
            .min(limit);
        let mut runs: Vec<Run<T>> = (0..lanes)
            .map(|_| Run {
                items: VecDeque::new(),
                after: after.map(str::to_owned),
                done: limit == 0,
            })
            .collect();
        // `limit` may be far more than the map holds.
        let mut out = Vec::with_capacity(limit.min(4_096));
        while out.len() < limit {
            // Every lane not read to its end has an item in hand, so the
            // smallest of those is the next of the map.
            for (lane, run_of) in self.lanes.iter().zip(runs.iter_mut()) {
                if run_of.items.is_empty() && !run_of.done {
                    let page =
                        T::read(&**lane, map_name, run_of.after.as_deref(), run, false).await?;
                    run_of.done = page.len() < run;
                    run_of.after = page.last().map(|item| item.key().to_owned());
                    run_of.items.extend(page);
                }
            }
            let next = runs
                .iter_mut()
                .filter(|r| !r.items.is_empty())
                .min_by(|a, b| a.items[0].key().cmp(b.items[0].key()));
            match next.and_then(|r| r.items.pop_front()) {
                Some(item) => out.push(item),
                None => break,
            }
        }
        Ok(out)
    }

    /// Pages in store order: lane by lane, each in its own store order,
    /// resuming in the lane of `after`.
    async fn lane_page<T: Page>(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StorageError> {
        let mut out = Vec::new();
        let (first, mut after) = match after {
            Some(key) => (self.lane_of(key), Some(key)),
            None => (0, None),
        };
        for lane in &self.lanes[first..] {
            let want = limit - out.len();
            if want == 0 {
                break;
            }
            let page = T::read(&**lane, map_name, after.take(), want, true).await?;
            let short = page.len() < want;
            out.extend(page);
            if !short {
                break;
            }
        }
        Ok(out)
    }
}

/// One lane's part of a key-order page being merged.
struct Run<T> {
    /// Read and not yet taken, in key order.
    items: VecDeque<T>,
    /// Where the lane's next read starts.
    after: Option<String>,
    /// The lane has nothing after `items`.
    done: bool,
}

/// What a page lists: records or stamps.
#[async_trait::async_trait]
trait Page: Sized + Send {
    fn key(&self) -> &str;

    /// A page of `lane`, in key order or in its own store order.
    async fn read(
        lane: &dyn ServerStore,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
        store_order: bool,
    ) -> Result<Vec<Self>, StorageError>;
}

#[async_trait::async_trait]
impl Page for StoreRecord {
    fn key(&self) -> &str {
        &self.key
    }

    async fn read(
        lane: &dyn ServerStore,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
        store_order: bool,
    ) -> Result<Vec<Self>, StorageError> {
        if store_order {
            lane.page_in_store_order(map_name, after, limit).await
        } else {
            lane.page(map_name, after, limit).await
        }
    }
}

#[async_trait::async_trait]
impl Page for KeyStamp {
    fn key(&self) -> &str {
        &self.key
    }

    async fn read(
        lane: &dyn ServerStore,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
        store_order: bool,
    ) -> Result<Vec<Self>, StorageError> {
        if store_order {
            lane.stamp_page_in_store_order(map_name, after, limit).await
        } else {
            lane.stamp_page(map_name, after, limit).await
        }
    }
}

#[async_trait::async_trait]
impl Paged for LanedStore {
    async fn page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.merged_page(map_name, after, limit).await
    }

    async fn stamp_page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.merged_page(map_name, after, limit).await
    }

    async fn page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.lane_page(map_name, after, limit).await
    }

    async fn stamp_page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.lane_page(map_name, after, limit).await
    }
}

#[async_trait::async_trait]
impl ServerStore for LanedStore {
    async fn merge(&self, records: Vec<StoreRecord>) -> Result<Vec<bool>, StorageError> {
        let LaneMerge { applied, error } = self.merge_lanes(records).await;
        match error {
            Some(error) => Err(error),
            None => Ok(applied.into_iter().map(|a| a == Some(true)).collect()),
        }
    }

    async fn merge_lanes(&self, records: Vec<StoreRecord>) -> LaneMerge {
        let total = records.len();
        if let Some(error) = records.iter().find_map(|r| super::invalid(self, r)) {
            return LaneMerge {
                applied: vec![None; total],
                error: Some(error),
            };
        }
        let by_lane = self.split(records.into_iter().map(|r| (self.lane_of(&r.key), r)));
        let merges = by_lane
            .into_iter()
            .map(
                |(lane, positions, records)| async move { (positions, lane.merge(records).await) },
            );
        let mut applied = vec![None; total];
        let mut failed = None;
        for (positions, result) in join_all(merges).await {
            match result {
                Ok(flags) => {
                    for (at, flag) in positions.into_iter().zip(flags) {
                        applied[at] = Some(flag);
                    }
                }
                // That lane applied nothing: its records stay `None`.
                Err(error) => failed = failed.or(Some(error)),
            }
        }
        LaneMerge {
            applied,
            error: failed,
        }
    }

    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        let lanes: Vec<usize> = keys.iter().map(|k| self.lane_of(k)).collect();
        // The keys of a Merkle leaf (a pull's reads) share one lane.
        if let Some(&first) = lanes.first() {
            if lanes.iter().all(|&lane| lane == first) {
                return self.lanes[first].get_many(map_name, keys).await;
            }
        }
        let by_lane = self.split(lanes.into_iter().zip(keys.iter().cloned()));
        let reads = by_lane
            .into_iter()
            .map(|(lane, positions, keys)| async move {
                lane.get_many(map_name, &keys)
                    .await
                    .map(|found| (positions, found))
            });
        let mut out = vec![None; keys.len()];
        for result in join_all(reads).await {
            let (positions, found) = result?;
            for (at, record) in positions.into_iter().zip(found) {
                out[at] = record;
            }
        }
        Ok(out)
    }

    fn refuses(
        &self,
        map_name: &str,
        key: &str,
        timestamp: &Timestamp,
        ttl_ms: Option<u64>,
    ) -> Option<&'static str> {
        self.lanes[self.lane_of(key)].refuses(map_name, key, timestamp, ttl_ms)
    }

    fn lanes(&self) -> usize {
        self.lanes.len()
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        for lane in &self.lanes {
            names.extend(lane.map_names().await?);
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    fn feed(&self) -> Option<&dyn ChangeFeed> {
        None
    }

    async fn close(&self) -> Result<(), StorageError> {
        let mut first = Ok(());
        for result in join_all(self.lanes.iter().map(|lane| lane.close())).await {
            first = first.and(result);
        }
        first
    }
}
