//! [`LocalData`]: the client's data on this device — the store, the HLC,
//! the working set, the write locks and the quota — and the one write path
//! every change goes through (local writes, clears, merges from the
//! server, pruning).

use crate::error::{check_name, ClientError};
use crate::events::{Origin, Published};
use crate::hub::{Change, MapHub, MapShared};
use crate::keylock::KeyLocks;
use crate::quota::{ClientEvent, Quota, QuotaSettings};
use crate::working_set::{CachedRecord, WorkingSet, WorkingSetLimits, WorkingSetStats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::broadcast;
use topgun_core::wire::WireRecord;
use topgun_core::{Hlc, HlcError, Timestamp};
use topgun_storage::{
    ClearOutcome, LocalWrite, OpId, OpType, PruneSums, ScanCursor, StorageError, Store, StoreRecord,
};
use topgun_sync::{Applied, BoxFuture, Replica, ReplicaError, Runtime, SyncNotifier};

/// Records read per store page by whole-map operations.
const PAGE: usize = 512;
/// How long a read waits for a pruned key to come back from the server.
const FETCH_WAIT_MS: u64 = 5_000;
/// A `get_many` missing this many keys in the working set waits for a
/// full read of their map under way (or starts the map's preload, if it
/// is due) instead of reading them beside it.
const WAIT_FOR_FULL_READ: usize = 64;

/// The value of a write of [`LocalData::write_many`] (`None` removes), or
/// why it could not be made.
pub(crate) type WriteValue = Result<Option<Vec<u8>>, ClientError>;

/// A write of [`LocalData::write_many`] on its way to the store.
struct PendingWrite {
    /// Its place among the writes (and their answers).
    index: usize,
    key: String,
    value: Option<Arc<[u8]>>,
    /// The timestamp to stamp after: the key's record as this replica
    /// holds it, or as the store answered when it refused a stale stamp.
    after: Option<Timestamp>,
}

/// The client's local data and its write path.
#[derive(Debug)]
pub(crate) struct LocalData {
    store: Arc<dyn Store>,
    hlc: Hlc,
    working_set: Mutex<WorkingSet>,
    locks: KeyLocks,
    quota: Quota,
    hub: MapHub,
    /// Set once when sync starts; told about every durable local change.
    sync: OnceLock<SyncNotifier>,
    /// Wakes live queries when a row's TTL passes; without one, expiries
    /// are noticed at the next change or read.
    timer: Option<Arc<dyn Runtime>>,
    closed: AtomicBool,
    /// Set while another process holds the store (this client follows it
    /// on a shared data directory): that process publishes every change,
    /// and the changes come back through [`apply_change`](Self::apply_change).
    forwarding: AtomicBool,
}

impl LocalData {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        hlc: Hlc,
        limits: WorkingSetLimits,
        quota: QuotaSettings,
        timer: Option<Arc<dyn Runtime>>,
    ) -> Self {
        Self {
            store,
            hlc,
            working_set: Mutex::new(WorkingSet::new(limits)),
            locks: KeyLocks::default(),
            quota: Quota::new(quota),
            hub: MapHub::default(),
            sync: OnceLock::new(),
            timer,
            closed: AtomicBool::new(false),
            forwarding: AtomicBool::new(false),
        }
    }

    /// Tells `notifier` about every local change from now on. Only the
    /// first call has an effect.
    pub(crate) fn attach_sync(&self, notifier: SyncNotifier) {
        let _ = self.sync.set(notifier);
    }

    /// The working set, locked.
    pub(crate) fn ws(&self) -> MutexGuard<'_, WorkingSet> {
        // Every critical section leaves its data consistent before anything
        // that can panic, so a poisoned lock is still usable.
        self.working_set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    pub(crate) fn now_millis(&self) -> u64 {
        self.hlc.clock().now_millis()
    }

    /// Completes once the clock may have reached `at_millis`; `None`
    /// without a timer.
    pub(crate) fn sleep_until(&self, at_millis: u64) -> Option<BoxFuture<'static, ()>> {
        let timer = self.timer.as_ref()?;
        Some(timer.sleep(at_millis.saturating_sub(self.now_millis())))
    }

    /// The store, for reads.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The map `name`, opened on first use.
    pub(crate) fn map(&self, name: &str) -> Arc<MapShared> {
        self.hub.map(name)
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.quota.events()
    }

    pub(crate) fn working_set_stats(&self) -> WorkingSetStats {
        self.ws().stats()
    }

    pub(crate) fn check_open(&self) -> Result<(), ClientError> {
        if self.closed.load(Ordering::Acquire) {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }

    /// Refuses later calls, forgets the maps and empties the RAM copy.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.hub.close();
        self.ws().invalidate_all();
    }

    /// The live value of `key` as cached (`Some(None)`: cached as absent or
    /// expired); `None` on a working-set miss.
    pub(crate) fn cached_value(&self, map: &str, key: &str) -> Option<Option<Arc<[u8]>>> {
        let now = self.now_millis();
        self.ws().get(map, key).map(|r| r.live_value(now).cloned())
    }

    /// The live value of `key`: working set first, then the store.
    pub(crate) async fn read(
        &self,
        map: &MapShared,
        key: &str,
    ) -> Result<Option<Arc<[u8]>>, ClientError> {
        self.check_open()?;
        if let Some(hit) = self.cached_value(map.name(), key) {
            return Ok(hit);
        }
        let record = self.load(map, key).await?;
        if record.is_none() && self.store.is_pruned(map.name(), key).await? {
            return self.fetch_pruned(map, key).await;
        }
        let now = self.now_millis();
        Ok(record.and_then(|r| r.live_value(now).cloned()))
    }

    /// The live values of `keys`, in their order: working set first (once
    /// a full read of the map under way is done, if many are missing, or
    /// `preload`, awaited only if many are missing and the map's preload is
    /// due), then one store call for all the misses.
    pub(crate) async fn read_many(
        &self,
        map: &MapShared,
        keys: &[String],
        preload: impl std::future::Future<Output = Result<bool, ClientError>>,
    ) -> Result<Vec<Option<Arc<[u8]>>>, ClientError> {
        self.check_open()?;
        let mut values = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            match self.cached_value(map.name(), key) {
                Some(hit) => values.push(hit),
                None => {
                    values.push(None);
                    misses.push(index);
                }
            }
        }
        let waited = if misses.len() < WAIT_FOR_FULL_READ {
            false
        } else if map.preload_due() {
            // The whole map is about to be read into the working set: one
            // read now beats reading these keys and then the map again.
            // Best effort: a map not read in full is read key by key below.
            let _ = preload.await;
            true
        } else if map.full_read().try_lock().is_err() {
            // The whole map is being read into the working set (a preload,
            // a query's first read): one read that is under way already
            // beats reading this many keys again beside it.
            drop(map.full_read().lock().await);
            true
        } else {
            false
        };
        if waited {
            self.check_open()?;
            let now = self.now_millis();
            let mut ws = self.ws();
            misses.retain(|&index| match ws.get_again(map.name(), &keys[index]) {
                Some(hit) => {
                    values[index] = hit.live_value(now).cloned();
                    false
                }
                None => true,
            });
        }
        if misses.is_empty() {
            return Ok(values);
        }
        let missed: Vec<String> = misses.iter().map(|&i| keys[i].clone()).collect();
        let mark = self.ws().read_mark();
        let records = self.store.get_many(map.name(), &missed).await?;
        let now = self.now_millis();
        let mut absent = Vec::new();
        {
            let mut ws = self.ws();
            for (&index, record) in misses.iter().zip(records) {
                match record {
                    Some(record) => {
                        let cached = CachedRecord::from_store(&record);
                        values[index] = cached.live_value(now).cloned();
                        ws.insert_loaded(map.name(), &keys[index], cached, mark);
                    }
                    None => absent.push(index),
                }
            }
        }
        // A key the store lacks may have been pruned: read it as `get` does.
        for index in absent {
            if self.store.is_pruned(map.name(), &keys[index]).await? {
                values[index] = self.fetch_pruned(map, &keys[index]).await?;
            }
        }
        Ok(values)
    }

    /// The live value of a key missing from the store after pruning: asks
    /// sync to fetch it from the server (if the server has it and the
    /// client is online) and takes it from the merge — the quota may prune
    /// it again at once when the store is full of unsynced data. Waits at
    /// most [`FETCH_WAIT_MS`].
    async fn fetch_pruned(
        &self,
        map: &MapShared,
        key: &str,
    ) -> Result<Option<Arc<[u8]>>, ClientError> {
        let mut merged = map.subscribe();
        let Some(done) = self.sync.get().and_then(|s| s.fetch(map.name(), key)) else {
            return Ok(None);
        };
        match self.sleep_until(self.now_millis().saturating_add(FETCH_WAIT_MS)) {
            Some(timeout) => {
                tokio::select! {
                    _ = done => {}
                    () = timeout => {}
                }
            }
            None => {
                // Answered when merged, when there is nothing to fetch, or
                // when the connection ends; an error means sync stopped.
                let _ = done.await;
            }
        }
        let mut fetched = None;
        loop {
            match merged.try_recv() {
                Ok(Published::Change(event)) if &*event.key == key => fetched = Some(event.new),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        if let Some(value) = fetched {
            return Ok(value);
        }
        let now = self.now_millis();
        Ok(self
            .load(map, key)
            .await?
            .and_then(|r| r.live_value(now).cloned()))
    }

    /// The current record of a key: working set first, then the store.
    async fn current(
        &self,
        map: &MapShared,
        key: &str,
    ) -> Result<Option<CachedRecord>, ClientError> {
        if let Some(hit) = self.ws().get(map.name(), key) {
            return Ok(Some(hit.clone()));
        }
        self.load(map, key).await
    }

    /// Reads a record from the store (a working-set miss) and caches it.
    async fn load(&self, map: &MapShared, key: &str) -> Result<Option<CachedRecord>, ClientError> {
        let mark = self.ws().read_mark();
        let Some(record) = self.store.get(map.name(), key).await? else {
            return Ok(None);
        };
        let cached = CachedRecord::from_store(&record);
        self.ws()
            .insert_loaded(map.name(), key, cached.clone(), mark);
        Ok(Some(cached))
    }

    /// Loads up to `limit` records into the working set, in map and key
    /// order.
    pub(crate) async fn warm_up(&self, limit: usize) -> Result<(), ClientError> {
        let mut left = limit;
        if left == 0 {
            return Ok(());
        }
        for map in self.store.map_names().await? {
            let records: Vec<StoreRecord> = self.store.scan(&map, None, left).await?;
            left -= records.len();
            let name = self.map(&map).name().clone();
            let mut ws = self.ws();
            for r in &records {
                ws.insert(&name, &r.key, CachedRecord::from_store(r));
            }
            if left == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The one local write path for a key: lock the key, stamp, make room,
    /// store record + op in one transaction, cache, publish, signal sync.
    /// While following another process, only lock, stamp and forward (see
    /// [`forward`](Self::forward)).
    pub(crate) async fn write(
        &self,
        map: &MapShared,
        key: &str,
        value: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        check_name("key", key)?;
        let _guard = self.locks.lock(map.name(), key).await;
        let op_type = if value.is_some() {
            OpType::Put
        } else {
            OpType::Remove
        };
        if self.forwarding() {
            let write = |timestamp| LocalWrite {
                map_name: map.name().to_string(),
                key: key.to_owned(),
                op_type,
                value: value.clone(),
                timestamp,
                ttl_ms,
            };
            return self.forward(map, write).await;
        }
        let write = |timestamp| LocalWrite {
            map_name: map.name().to_string(),
            key: key.to_owned(),
            op_type,
            value: value.clone(),
            timestamp,
            ttl_ms,
        };
        let cached = self.ws().get(map.name(), key).cloned();
        match cached {
            Some(previous) => {
                let timestamp = self.stamp_after(Some(&previous.timestamp));
                self.commit(map, Some(&previous), write(timestamp)).await
            }
            // Not in RAM: the store reads the previous record in the
            // write's own transaction (one read instead of two on
            // IndexedDB) and refuses a stamp that is not newer.
            None => self.commit_unread(map, write).await,
        }
    }

    /// Several local writes to `map` (`(key, value)`; `None` removes),
    /// answered in their order, each as [`write`](Self::write) answers it;
    /// a write whose value already failed (it did not encode) is answered
    /// with that error.
    /// Writes of distinct keys are locked, stamped and stored together
    /// ([`Store::write_local_checked_many`]: one transaction on IndexedDB);
    /// a key given again goes in a later round, so the later value wins.
    pub(crate) async fn write_many(
        &self,
        map: &MapShared,
        writes: Vec<(String, WriteValue)>,
    ) -> Vec<Result<OpId, ClientError>> {
        let mut answers: Vec<Option<Result<OpId, ClientError>>> = Vec::new();
        let mut rounds: Vec<Vec<PendingWrite>> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(writes.len());
        for (index, (key, value)) in writes.into_iter().enumerate() {
            // Errors in `put`'s order: the value's, then the key's.
            let checked = value.and_then(|value| {
                self.check_open()?;
                check_name("key", &key)?;
                Ok(value)
            });
            let value = match checked {
                Ok(value) => value,
                Err(error) => {
                    answers.push(Some(Err(error)));
                    continue;
                }
            };
            answers.push(None);
            let round = match seen.get_mut(&key) {
                Some(round) => {
                    *round += 1;
                    *round
                }
                None => {
                    seen.insert(key.clone(), 0);
                    0
                }
            };
            if rounds.len() == round {
                rounds.push(Vec::new());
            }
            rounds[round].push(PendingWrite {
                index,
                key,
                value: value.map(Arc::from),
                after: None,
            });
        }
        for round in rounds {
            let single = {
                let keys: Vec<&str> = round.iter().map(|w| w.key.as_str()).collect();
                let _guard = self.locks.lock_keys(map.name(), &keys).await;
                self.write_round(map, round, &mut answers).await
            };
            // What the round could not store together goes the one-key way
            // (forwarded to the process holding the store, or each with its
            // own room-making and error).
            let single = single.into_iter().map(|write| async move {
                let value = write.value.as_deref().map(<[u8]>::to_vec);
                (write.index, self.write(map, &write.key, value, None).await)
            });
            for (index, answer) in futures_util::future::join_all(single).await {
                answers[index] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.expect("every write answered"))
            .collect()
    }

    /// One round of [`write_many`](Self::write_many) (distinct keys, all
    /// locked): stamps the writes after what this replica holds of their
    /// keys, stores them together, stamps again after the stored record
    /// those refused as stale, and caches and publishes those stored.
    /// Returns the writes left for the one-key path: all of them while
    /// another process holds the store or when room cannot be made.
    async fn write_round(
        &self,
        map: &MapShared,
        mut pending: Vec<PendingWrite>,
        answers: &mut [Option<Result<OpId, ClientError>>],
    ) -> Vec<PendingWrite> {
        if self.forwarding()
            || self
                .quota
                .ensure_room(self.store.as_ref(), &self.working_set)
                .await
                .is_err()
        {
            return pending;
        }
        {
            let mut ws = self.ws();
            for write in &mut pending {
                write.after = ws.get(map.name(), &write.key).map(|c| c.timestamp.clone());
            }
        }
        let mut attempts = 0;
        let mut room_made: Option<u64> = None;
        while !pending.is_empty() {
            let stamped: Vec<LocalWrite> = pending
                .iter()
                .map(|write| LocalWrite {
                    map_name: map.name().to_string(),
                    key: write.key.clone(),
                    op_type: if write.value.is_some() {
                        OpType::Put
                    } else {
                        OpType::Remove
                    },
                    value: write.value.as_deref().map(<[u8]>::to_vec),
                    timestamp: self.stamp_after(write.after.as_ref()),
                    ttl_ms: None,
                })
                .collect();
            let timestamps: Vec<Timestamp> = stamped.iter().map(|w| w.timestamp.clone()).collect();
            let results = self.store.write_local_checked_many(stamped).await;
            let mut again = Vec::new();
            let mut full = false;
            for ((mut write, timestamp), result) in pending.into_iter().zip(timestamps).zip(results)
            {
                match result {
                    Ok((op_id, previous)) => {
                        let previous = previous.as_ref().map(CachedRecord::from_store);
                        let value = write.value.take();
                        self.after_commit(
                            map,
                            previous.as_ref(),
                            &write.key,
                            value,
                            timestamp,
                            None,
                        );
                        answers[write.index] = Some(Ok(op_id));
                    }
                    // As in `restamping`: bounded by the drift bound.
                    Err(StorageError::Stale { current }) if attempts < 8 => {
                        write.after = Some(current);
                        again.push(write);
                    }
                    Err(StorageError::Full { .. }) if room_made.is_none() => {
                        full = true;
                        again.push(write);
                    }
                    Err(StorageError::Full { .. }) => {
                        let used = room_made.unwrap_or_default();
                        answers[write.index] =
                            Some(Err(ClientError::QuotaExceeded { used, budget: used }));
                    }
                    Err(error) => answers[write.index] = Some(Err(error.into())),
                }
            }
            attempts += 1;
            pending = again;
            if full {
                // As in `with_room`: prune synced records once, then retry.
                match self
                    .quota
                    .make_room_when_full(self.store.as_ref(), &self.working_set)
                    .await
                {
                    Ok(used) => room_made = Some(used),
                    Err(_) => return pending,
                }
            }
        }
        Vec::new()
    }

    /// [`commit`](Self::commit) of a key this client has not read: makes
    /// room, stores the write if the stored record is older (else stamps
    /// again after it), caches it, signals sync and publishes the change
    /// from the record it replaced.
    async fn commit_unread(
        &self,
        map: &MapShared,
        write: impl Fn(Timestamp) -> LocalWrite,
    ) -> Result<OpId, ClientError> {
        self.quota
            .ensure_room(self.store.as_ref(), &self.working_set)
            .await?;
        let ((op_id, previous), stamped) = self
            .restamping(write, |stamped| {
                self.with_room(move || self.store.write_local_checked(stamped.clone()))
            })
            .await?;
        let previous = previous.as_ref().map(CachedRecord::from_store);
        let value = stamped.value.map(Arc::from);
        let LocalWrite {
            key,
            timestamp,
            ttl_ms,
            ..
        } = stamped;
        self.after_commit(map, previous.as_ref(), &key, value, timestamp, ttl_ms);
        Ok(op_id)
    }

    /// Runs `attempt` with `write` stamped now; while the store refuses
    /// the stamp as stale, stamps again after the stored record and
    /// retries. Returns the answer and the write that was stored.
    async fn restamping<T, Fut>(
        &self,
        write: impl Fn(Timestamp) -> LocalWrite,
        attempt: impl Fn(LocalWrite) -> Fut,
    ) -> Result<(T, LocalWrite), ClientError>
    where
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut after: Option<Timestamp> = None;
        let mut attempts = 0;
        loop {
            let stamped = write(self.stamp_after(after.as_ref()));
            match attempt(stamped.clone()).await {
                Ok(answer) => return Ok((answer, stamped)),
                // Beyond the drift bound the clock keeps its own stamp and
                // the retry is refused again; the loop is bounded.
                Err(ClientError::Storage(StorageError::Stale { current })) if attempts < 8 => {
                    attempts += 1;
                    after = Some(current);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs a store write; if the store is full ([`StorageError::Full`]:
    /// the browser's quota), prunes synced records and runs it once more.
    async fn with_room<T, F, Fut>(&self, attempt: F) -> Result<T, ClientError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        match attempt().await {
            Err(StorageError::Full { .. }) => {
                let used = self
                    .quota
                    .make_room_when_full(self.store.as_ref(), &self.working_set)
                    .await?;
                match attempt().await {
                    Err(StorageError::Full { .. }) => {
                        Err(ClientError::QuotaExceeded { used, budget: used })
                    }
                    result => Ok(result?),
                }
            }
            result => Ok(result?),
        }
    }

    /// A follower's write: stamped here, run by the process holding the
    /// store, which publishes the change (it comes back before the reply,
    /// through [`apply_change`](Self::apply_change)). A write refused as
    /// stale (that process holds a newer record of the key) is stamped
    /// again after that record. If this process took over the store
    /// meanwhile, the write ran here and is published here.
    async fn forward(
        &self,
        map: &MapShared,
        write: impl Fn(Timestamp) -> LocalWrite,
    ) -> Result<OpId, ClientError> {
        let (op_id, stamped) = self
            .restamping(write, |stamped| async move {
                Ok(self.store.write_local(stamped).await?)
            })
            .await?;
        if !self.forwarding() {
            let value = stamped.value.map(Arc::from);
            let key = stamped.key;
            self.after_commit(map, None, &key, value, stamped.timestamp, stamped.ttl_ms);
        }
        Ok(op_id)
    }

    /// Whether another process holds the store.
    fn forwarding(&self) -> bool {
        self.forwarding.load(Ordering::Acquire)
    }

    /// Says whether another process holds the store from now on.
    #[cfg_attr(not(all(feature = "redb", unix)), allow(dead_code))] // Used by `shared_dir`.
    pub(crate) fn set_forwarding(&self, forwarding: bool) {
        self.forwarding.store(forwarding, Ordering::Release);
    }

    /// A write stamped by another process sharing this data (forwarded
    /// over the data directory's socket), applied like [`write`](Self::write)
    /// if [`stamped_verdict`] says so. `retried`: the call may have run
    /// already (its first try's connection broke).
    ///
    /// # Errors
    /// As for [`write`](Self::write); [`StorageError::Stale`] for a stamp
    /// older than the record's; [`ClientError::Clock`] for a stamp beyond
    /// the clock's drift bound.
    #[cfg_attr(not(all(feature = "redb", unix)), allow(dead_code))] // Used by `shared_dir`.
    pub(crate) async fn write_stamped(
        &self,
        write: LocalWrite,
        retried: bool,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        check_name("key", &write.key)?;
        let map = self.map(&write.map_name);
        let _guard = self.locks.lock(map.name(), &write.key).await;
        let previous = self.current(&map, &write.key).await?;
        let current = previous.as_ref().map(|p| &p.timestamp);
        if let Some(op) = stamped_verdict(self.store.as_ref(), current, &write, retried).await? {
            return Ok(op);
        }
        self.hlc.update(&write.timestamp)?;
        self.commit(&map, previous.as_ref(), write).await
    }

    /// Makes room, stores `write` (record + op in one transaction), caches
    /// it, signals sync and publishes the change from `previous`.
    async fn commit(
        &self,
        map: &MapShared,
        previous: Option<&CachedRecord>,
        write: LocalWrite,
    ) -> Result<OpId, ClientError> {
        self.quota
            .ensure_room(self.store.as_ref(), &self.working_set)
            .await?;
        let key = write.key.clone();
        let timestamp = write.timestamp.clone();
        let ttl_ms = write.ttl_ms;
        let value: Option<Arc<[u8]>> = write.value.as_deref().map(Arc::from);
        let op_id = self
            .with_room(|| self.store.write_local(write.clone()))
            .await?;
        self.after_commit(map, previous, &key, value, timestamp, ttl_ms);
        Ok(op_id)
    }

    /// Caches a committed local write, signals sync and publishes the
    /// change from `previous`.
    fn after_commit(
        &self,
        map: &MapShared,
        previous: Option<&CachedRecord>,
        key: &str,
        value: Option<Arc<[u8]>>,
        timestamp: Timestamp,
        ttl_ms: Option<u64>,
    ) {
        let now = self.now_millis();
        let cached = CachedRecord::new(value, timestamp.clone(), ttl_ms);
        let new_live = cached.live_value(now).cloned();
        self.ws().insert(map.name(), key, cached);
        let old = previous.and_then(|p| p.live_value(now).cloned());
        self.signal_sync(map.name());
        map.publish(key, old, new_live, Origin::Local, timestamp, ttl_ms);
    }

    /// The write path for a whole map: excludes every write to the map,
    /// makes room, gathers the live values (when someone listens), stores
    /// one CLEAR op and a tombstone per live key in one transaction, then
    /// publishes each removal with its old value and signals sync. Stamped
    /// now, or at `at` for a clear forwarded by another process sharing
    /// this data.
    ///
    /// # Errors
    /// Storage and quota errors; [`ClientError::Clock`] for an `at` beyond
    /// the clock's drift bound.
    pub(crate) async fn clear(
        &self,
        map: &MapShared,
        at: Option<Timestamp>,
    ) -> Result<ClearOutcome, ClientError> {
        self.check_open()?;
        let _guard = self.locks.lock_map(map.name()).await;
        if let Some(at) = &at {
            self.hlc.update(at)?;
        }
        // A follower only forwards; the holder of the store makes room,
        // and publishes each removal with its old value.
        let forwarding = self.forwarding();
        if !forwarding {
            self.quota
                .ensure_room(self.store.as_ref(), &self.working_set)
                .await?;
        }
        let now = self.now_millis();
        let mut old_values = std::collections::HashMap::new();
        if !forwarding && map.has_listeners() {
            let mut pages = ScanCursor::new(map.name().as_ref(), PAGE).any_order();
            while let Some(page) = pages.next_page(self.store.as_ref()).await? {
                for r in page {
                    if r.is_live(now) {
                        old_values.insert(r.key, r.value.map(Arc::<[u8]>::from));
                    }
                }
            }
        }
        let timestamp = at.unwrap_or_else(|| self.hlc.now());
        let outcome = self.store.clear_map(map.name(), timestamp.clone()).await?;
        self.ws().invalidate_map(map.name());
        map.may_fit_again();
        if forwarding && self.forwarding() {
            return Ok(outcome);
        }
        if !outcome.removed_keys.is_empty() {
            self.signal_sync(map.name());
        }
        for key in &outcome.removed_keys {
            let old = old_values.remove(key).flatten();
            map.publish(key, old, None, Origin::Local, timestamp.clone(), None);
        }
        Ok(outcome)
    }
}

/// What sharing one store with other processes or tabs needs (`shared_dir`
/// and `tabs`).
#[cfg_attr(
    not(any(
        all(feature = "redb", unix),
        all(feature = "indexeddb", target_family = "wasm")
    )),
    allow(dead_code)
)]
impl LocalData {
    /// Every change published from now on, in every map.
    pub(crate) fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.hub.changes()
    }

    /// Applies a change published by the process that holds the store
    /// (this client forwards its calls there): the clock observes it, a
    /// cached copy is replaced (this client's own writes are cached),
    /// subscribers and live queries see it.
    pub(crate) fn apply_change(&self, change: Change) {
        let _ = self.hlc.update(&change.timestamp);
        let map = self.map(&change.map);
        let record = CachedRecord::new(change.new.clone(), change.timestamp.clone(), change.ttl_ms);
        if change.timestamp.node_id == self.hlc.node_id() {
            self.ws().insert(map.name(), &change.key, record);
        } else {
            self.ws().update_if_cached(&change.map, &change.key, record);
        }
        map.publish(
            &change.key,
            change.old,
            change.new,
            change.origin,
            change.timestamp,
            change.ttl_ms,
        );
    }

    /// After changes may have gone unseen by this client: forgets every
    /// cached record and has live queries read their results again.
    /// Subscribers are not told: [`Self::changes_missed`] is for changes
    /// they were owed.
    pub(crate) fn forget_unseen_changes(&self) {
        self.ws().invalidate_all();
        self.hub.resync_live_queries();
    }

    /// After changes may have been lost on their way here (no leader
    /// streamed them, or the stream fell behind): forgets what
    /// [`Self::forget_unseen_changes`] forgets and tells subscribers
    /// ([`RecvError::Missed`](crate::events::RecvError::Missed)).
    pub(crate) fn changes_missed(&self) {
        self.forget_unseen_changes();
        self.hub.changes_missed();
    }
}

impl LocalData {
    /// A fresh timestamp, strictly after `after` (the stored record's) so a
    /// local write always supersedes what this replica holds, even if the
    /// wall clock went back across a restart.
    fn stamp_after(&self, after: Option<&Timestamp>) -> Timestamp {
        let ts = self.hlc.now();
        match after {
            Some(prev) if *prev >= ts => {
                // Beyond the drift bound the clock refuses to jump; the write
                // then keeps its own (older) stamp and loses to `prev` on sync.
                if self.hlc.update(prev).is_ok() {
                    self.hlc.now()
                } else {
                    ts
                }
            }
            _ => ts,
        }
    }

    pub(crate) fn signal_sync(&self, map: &str) {
        if let Some(sync) = self.sync.get() {
            sync.local_change(map);
        }
    }

    /// Merges server records into `map` by LWW in one storage transaction
    /// (relaxed: it need not be durable, see
    /// [`Store::apply_remote_relaxed`]): a record replaces the local one
    /// only if its timestamp is strictly greater; merged records are clean.
    /// The HLC absorbs every accepted timestamp; one beyond the drift bound
    /// is refused. Subscribers and live queries see each change with origin
    /// `Remote`. Afterwards the quota prunes if the store is over budget.
    ///
    /// The keys are locked for the duration, so a concurrent local write to
    /// the same key is ordered before or after the merge, never across it.
    pub(crate) async fn apply_remote(
        &self,
        map: &str,
        records: Vec<(String, WireRecord)>,
    ) -> Result<Applied, ClientError> {
        self.check_open()?;
        let shared = self.map(map);
        let guard = {
            let keys: Vec<&str> = records
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !k.is_empty())
                .collect();
            self.locks.lock_keys(map, &keys).await
        };
        let mut result = Applied::default();
        let mut batch = Vec::with_capacity(records.len());
        for (key, record) in records {
            if key.is_empty() {
                result.refused.push((key, "empty key".into()));
                continue;
            }
            if let Err(e) = self.hlc.update(&record.timestamp) {
                result.refused.push((key, e.to_string()));
                continue;
            }
            let value = record.value.as_ref().map(|v| {
                let mut buf = Vec::new();
                // Writing to a Vec cannot fail.
                let _ = rmpv::encode::write_value(&mut buf, v);
                buf
            });
            batch.push(StoreRecord {
                map_name: map.to_owned(),
                key,
                value,
                timestamp: record.timestamp,
                ttl_ms: record.ttl_ms,
                dirty: false,
            });
        }
        if batch.is_empty() {
            return Ok(result);
        }
        // Relaxed: a merged record can always be fetched again. If a crash
        // loses it, the Merkle tree rebuilt from the store at start lacks
        // it and the next pull brings it back; local writes stay durable.
        let changes = self.store.apply_remote_relaxed(batch).await?;
        let now = self.now_millis();
        for change in changes {
            let current = CachedRecord::from_store(&change.current);
            let new = current.live_value(now).cloned();
            let old = change
                .previous
                .as_ref()
                .and_then(|p| CachedRecord::from_store(p).live_value(now).cloned());
            let StoreRecord {
                key,
                timestamp,
                ttl_ms,
                ..
            } = change.current;
            self.ws().update_if_cached(shared.name(), &key, current);
            shared.publish(&key, old, new, Origin::Remote, timestamp, ttl_ms);
        }
        drop(guard);
        self.quota
            .after_merge(self.store.as_ref(), &self.working_set)
            .await?;
        Ok(result)
    }

    /// Drops the clean records among `keys` of `map` from the store, from
    /// its Merkle leaf sums and from RAM (a map reset: the next pull brings
    /// them back); dirty ones stay.
    pub(crate) async fn drop_clean(&self, map: &str, keys: &[String]) -> Result<(), ClientError> {
        let removed = self.store.prune_clean(map, keys, PruneSums::Drop).await?;
        let mut ws = self.ws();
        for key in &removed {
            ws.invalidate(map, key);
        }
        Ok(())
    }
}

#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
impl Replica for LocalData {
    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    fn node_id(&self) -> &str {
        self.hlc.node_id()
    }

    fn wall_ms(&self) -> u64 {
        self.now_millis()
    }

    async fn apply_remote(
        &self,
        map: &str,
        records: Vec<(String, WireRecord)>,
    ) -> Result<Applied, ReplicaError> {
        Ok(LocalData::apply_remote(self, map, records).await?)
    }

    async fn drop_clean(&self, map: &str, keys: &[String]) -> Result<(), ReplicaError> {
        Ok(LocalData::drop_clean(self, map, keys).await?)
    }

    fn observe_timestamp(&self, timestamp: &Timestamp) -> Result<(), HlcError> {
        self.hlc.update(timestamp).map(|_| ())
    }
}

/// Whether a write stamped elsewhere applies over a record stamped
/// `current`: `Ok(None)` when its stamp is newer; `Ok(Some(op id))` when it
/// already ran — the record has its very stamp, or (for a `retried` call)
/// its op is in the log under a newer record — answered with its op id (0
/// once a server acknowledged it and it left the log); else
/// [`StorageError::Stale`], for its writer to stamp it again.
#[cfg_attr(not(all(feature = "redb", unix)), allow(dead_code))] // Used by `shared_dir`.
pub(crate) async fn stamped_verdict(
    store: &dyn Store,
    current: Option<&Timestamp>,
    write: &LocalWrite,
    retried: bool,
) -> Result<Option<OpId>, StorageError> {
    match current {
        Some(c) if *c == write.timestamp => Ok(Some(find_op(store, write).await?.unwrap_or(0))),
        Some(c) if *c > write.timestamp => match retried {
            true => match find_op(store, write).await? {
                Some(op) => Ok(Some(op)),
                None => Err(StorageError::Stale { current: c.clone() }),
            },
            false => Err(StorageError::Stale { current: c.clone() }),
        },
        _ => Ok(None),
    }
}

/// The id of the pending op that `write` (already applied) logged; `None`
/// once a server acknowledged it and it left the log.
#[cfg_attr(not(all(feature = "redb", unix)), allow(dead_code))] // Used by `shared_dir`.
pub(crate) async fn find_op(
    store: &dyn Store,
    write: &LocalWrite,
) -> Result<Option<OpId>, StorageError> {
    let mut after = None;
    loop {
        let page = store.pending_ops(after, PAGE).await?;
        let last = page.last().map(|op| op.id);
        if let Some(op) = page.iter().find(|op| {
            op.timestamp == write.timestamp && op.key == write.key && op.map_name == write.map_name
        }) {
            return Ok(Some(op.id));
        }
        if page.len() < PAGE {
            return Ok(None);
        }
        after = last;
    }
}
