//! [`IMap`]: a typed view of one map.

use crate::error::{check_name, ClientError};
use crate::events::Subscription;
use crate::hub::MapShared;
use crate::keep::KeepAlive;
use crate::live_query::{typed_page, LiveQueryHandle, QueryPage};
use crate::local::LocalData;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use topgun_storage::{OpId, ScanCursor, StoreRecord};

/// Records read per store page by [`EntryStream`] (larger in the browser,
/// where a page is a round trip to IndexedDB's backend).
const PAGE: usize = if cfg!(target_family = "wasm") {
    16384
} else {
    256
};

/// Whether a record's latest local change reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// A local write to it awaits a server's ack.
    Pending,
    /// The record matches what the server acknowledged or sent.
    Synced,
}

/// A map of `String` keys to values of type `V`, answering from local
/// storage. Obtain one with [`TopGunClient::get_map`](crate::TopGunClient::get_map).
///
/// Values are stored as MessagePack; a map opened with another `V` than
/// the one its values were written with fails to decode them
/// ([`ClientError::Decode`]).
#[derive(Debug)]
pub struct IMap<V> {
    local: Arc<LocalData>,
    shared: Arc<MapShared>,
    /// Keeps sync running while the map is in use.
    _keep: KeepAlive,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for IMap<V> {
    fn clone(&self) -> Self {
        self.with_values()
    }
}

impl<V> IMap<V> {
    /// The same map with its values written and read as `W` (the same
    /// MessagePack, seen as another type: a `serde_json::Value` map read as
    /// raw text, say).
    pub fn with_values<W>(&self) -> IMap<W> {
        IMap {
            local: self.local.clone(),
            shared: self.shared.clone(),
            _keep: self._keep.clone(),
            _v: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> IMap<V> {
    pub(crate) fn new(local: Arc<LocalData>, shared: Arc<MapShared>, keep: KeepAlive) -> Self {
        Self {
            local,
            shared,
            _keep: keep,
            _v: PhantomData,
        }
    }

    /// The map's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    fn encode(&self, key: &str, value: &V) -> Result<Vec<u8>, ClientError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|source| ClientError::Encode {
            map: self.shared.name().to_string(),
            key: key.to_owned(),
            source,
        })?;
        if bytes.len() > crate::MAX_VALUE_LEN {
            return Err(ClientError::ValueTooLarge {
                map: self.shared.name().to_string(),
                key: key.to_owned(),
                len: bytes.len(),
                max: crate::MAX_VALUE_LEN,
            });
        }
        Ok(bytes)
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<V, ClientError> {
        rmp_serde::from_slice(bytes).map_err(|source| ClientError::Decode {
            map: self.shared.name().to_string(),
            key: key.to_owned(),
            source,
        })
    }

    /// Writes `value` under `key`: stamps it with the HLC, stores the record
    /// (marked pending) and its PUT op in one transaction, then notifies
    /// subscribers and sync. Returns the op id once the write is durable.
    /// Two concurrent writes to one key are applied in call order of their
    /// lock acquisition; writes to different keys run in parallel.
    ///
    /// # Errors
    /// [`ClientError::InvalidName`] for an empty or overlong key,
    /// [`ClientError::Encode`] for a value that does not serialise,
    /// [`ClientError::QuotaExceeded`], storage errors. On error nothing
    /// was written.
    pub async fn put(&self, key: &str, value: V) -> Result<OpId, ClientError> {
        let bytes = self.encode(key, &value)?;
        self.local.write(&self.shared, key, Some(bytes), None).await
    }

    /// Writes every `(key, value)` of `entries` as [`put`](Self::put)
    /// writes each, together: the writes of distinct keys take their locks
    /// once and share a store transaction where the backend groups them
    /// (IndexedDB). A key given more than once is written in the given
    /// order, so its last value wins. Answers each entry in order; an
    /// entry that fails (see [`put`](Self::put)) is not written, the
    /// others are.
    pub async fn put_many(
        &self,
        entries: impl IntoIterator<Item = (String, V)>,
    ) -> Vec<Result<OpId, ClientError>> {
        let writes = entries
            .into_iter()
            .map(|(key, value)| {
                let bytes = self.encode(&key, &value).map(Some);
                (key, bytes)
            })
            .collect();
        self.local.write_many(&self.shared, writes).await
    }

    /// Like [`put`](Self::put), with a time to live: the value reads as
    /// absent once `ttl_ms` milliseconds have passed since the write.
    ///
    /// # Errors
    /// As for [`put`](Self::put).
    pub async fn put_with_ttl(
        &self,
        key: &str,
        value: V,
        ttl_ms: u64,
    ) -> Result<OpId, ClientError> {
        let bytes = self.encode(key, &value)?;
        self.local
            .write(&self.shared, key, Some(bytes), Some(ttl_ms))
            .await
    }

    /// The value of `key`: from the working set, else from the store (and
    /// then cached). `None` when absent, deleted, or expired by TTL.
    ///
    /// # Errors
    /// [`ClientError::InvalidName`] for an empty or overlong key;
    /// [`ClientError::Decode`] if the stored value is not a `V`; storage
    /// errors.
    pub async fn get(&self, key: &str) -> Result<Option<V>, ClientError> {
        check_name("key", key)?;
        // Hot path: a working-set hit copies out only the value's `Arc`.
        let value = self.local.read(&self.shared, key).await?;
        value.map(|bytes| self.decode(key, &bytes)).transpose()
    }

    /// The values of `keys`, in their order (`None` for an absent key):
    /// what `get` answers for each, with one store read for all the keys
    /// the working set lacks.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<V>>, ClientError> {
        for key in keys {
            check_name("key", key)?;
        }
        let values = self
            .local
            .read_many(&self.shared, keys, self.preload())
            .await?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| value.map(|bytes| self.decode(key, &bytes)).transpose())
            .collect()
    }

    /// Removes `key`: stores a tombstone (pending) and a REMOVE op in one
    /// transaction. Removing an absent key still records the removal, so
    /// it wins over older writes elsewhere.
    ///
    /// # Errors
    /// As for [`put`](Self::put).
    pub async fn remove(&self, key: &str) -> Result<OpId, ClientError> {
        self.local.write(&self.shared, key, None, None).await
    }

    /// Clears the map: one CLEAR op and a tombstone, at one timestamp, for
    /// every key that is live here now, in one transaction. It goes through
    /// the same write path as [`put`](Self::put): it waits for writes to the
    /// map in progress (and holds new ones back), makes room under the
    /// quota, and subscribers get a removal event per key with its old
    /// value.
    ///
    /// Once synced, a clear converges like removes of those keys: the sync
    /// engine sends a REMOVE for each tombstone the clear wrote (the wire
    /// protocol has no CLEAR), so a key written elsewhere after the clear's
    /// timestamp survives, and keys this client had never seen are not
    /// cleared.
    ///
    /// # Errors
    /// [`ClientError::QuotaExceeded`], storage errors; then nothing was
    /// cleared.
    pub async fn clear(&self) -> Result<OpId, ClientError> {
        Ok(self.local.clear(&self.shared, None).await?.op_id)
    }

    /// Every live entry in key order, read from the store page by page (so
    /// a map larger than RAM can be walked). Values are decoded as `V`.
    pub fn entries(&self) -> EntryStream<V> {
        EntryStream {
            map: self.clone(),
            pages: ScanCursor::new(self.shared.name().as_ref(), PAGE),
            page: VecDeque::new(),
            started: false,
        }
    }

    /// Every live key in key order (values are not decoded).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn keys(&self) -> Result<Vec<String>, ClientError> {
        let mut stream = self.entries();
        let mut keys = Vec::new();
        while let Some(r) = stream.next_record().await? {
            keys.push(r.key);
        }
        Ok(keys)
    }

    /// Whether the record of `key` awaits a server ack (`Pending`) or not
    /// (`Synced`); `None` if the store has no record of the key.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn sync_state(&self, key: &str) -> Result<Option<crate::SyncState>, ClientError> {
        check_name("key", key)?;
        let record = self.local.store().get(self.shared.name(), key).await?;
        Ok(record.map(|r| {
            if r.dirty {
                SyncState::Pending
            } else {
                SyncState::Synced
            }
        }))
    }

    /// A stream of this map's changes from now on (local writes, and remote
    /// merges once sync runs). See [`crate::events`] for the overflow
    /// policy.
    pub fn subscribe(&self) -> Subscription<V> {
        Subscription::new(self.shared.subscribe())
    }

    /// Runs a query over the map's records: over the working set's copy
    /// when the whole map fits in it (the first query reads the map into
    /// it), else over the store, streaming through the map page by page
    /// (memory O(limit) for a limited query). Either way the result is
    /// that of every record this client knows of.
    ///
    /// # Errors
    /// [`ClientError::Query`] for an invalid query (unknown op, a regex that
    /// does not compile, a value of the wrong type for its op, a bad
    /// cursor); [`ClientError::Decode`] if a row is not a `V`; storage
    /// errors.
    pub async fn query(&self, query: &crate::query::Query) -> Result<QueryPage<V>, ClientError> {
        self.local.check_open()?;
        let compiled = crate::query::QueryExt::compile(query)?;
        let name = self.shared.name();
        crate::complete::query(&self.local, &self.shared, &compiled, |rows| {
            typed_page(name, rows)
        })
        .await?
    }

    /// Runs a query as [`query`](Self::query) does and hands its page to
    /// `page` undecoded: `(key, JSON value)` rows, the values borrowed
    /// from the working set's copy of the map where the query ran over it.
    /// For callers that only write the rows out (as JSON, say), this
    /// spares a copy and a decode of every row.
    ///
    /// # Errors
    /// As for [`query`](Self::query), except [`ClientError::Decode`].
    pub async fn query_rows<R>(
        &self,
        query: &crate::query::Query,
        page: impl FnOnce(crate::query::QueryRows<'_>) -> R,
    ) -> Result<R, ClientError> {
        self.local.check_open()?;
        let compiled = crate::query::QueryExt::compile(query)?;
        crate::complete::query(&self.local, &self.shared, &compiled, page).await
    }

    /// Reads the whole map into the working set now, so that its queries
    /// answer from memory from the start, if it fits: at most the
    /// working set's complete limit (half its entries) of records,
    /// tombstones counted, and room for them without evicting other maps'
    /// records. Otherwise nothing is read and queries read the store as
    /// usual. Runs once per map and client (later calls answer at once);
    /// queries arriving meanwhile wait for it rather than read the map
    /// again. The JS API preloads every map `getMap` opens (unless the
    /// client is opened with `preload: false`).
    ///
    /// Returns whether the map is now held whole.
    ///
    /// # Errors
    /// Storage errors, [`ClientError::Closed`].
    pub async fn preload(&self) -> Result<bool, ClientError> {
        crate::complete::preload(&self.local, &self.shared).await
    }

    /// [`preload`](Self::preload), for the caller to run later (the JS API
    /// runs it from the page's next task, so that the page's first reads
    /// and writes are not queued behind it). Until it starts, a
    /// [`get_many`](Self::get_many) missing many keys in the working set
    /// starts it at once and answers from the records it read, rather than
    /// reading those keys and then the whole map again.
    pub fn preload_later(&self) -> impl std::future::Future<Output = Result<bool, ClientError>>
    where
        V: 'static,
    {
        self.shared.set_preload_due();
        let map = self.clone();
        async move { map.preload().await }
    }

    /// How many records match `query` (at most its `limit`), without
    /// decoding them as `V`.
    ///
    /// # Errors
    /// As for [`query`](Self::query).
    pub async fn count(&self, query: &crate::query::Query) -> Result<u64, ClientError> {
        self.local.check_open()?;
        let compiled = crate::query::QueryExt::compile(query)?;
        crate::complete::count(&self.local, &self.shared, &compiled).await
    }

    /// Starts a live query: its initial result, then every change to it as
    /// writes to this map happen (ENTER / UPDATE / LEAVE).
    ///
    /// # Errors
    /// As for [`query`](Self::query).
    pub async fn live_query(
        &self,
        query: crate::query::Query,
    ) -> Result<LiveQueryHandle<V>, ClientError> {
        self.local.check_open()?;
        LiveQueryHandle::start(self.local.clone(), self.shared.clone(), query).await
    }
}

/// Live entries of a map in key order, fetched from the store a page at a
/// time. Obtain one with [`IMap::entries`].
#[derive(Debug)]
pub struct EntryStream<V> {
    map: IMap<V>,
    pages: ScanCursor,
    page: VecDeque<StoreRecord>,
    /// Whether a page was read.
    started: bool,
}

impl<V: Serialize + DeserializeOwned> EntryStream<V> {
    /// The next live record (tombstones and expired records skipped).
    async fn next_record(&mut self) -> Result<Option<StoreRecord>, ClientError> {
        loop {
            if let Some(r) = self.page.pop_front() {
                if r.is_live(self.map.local.now_millis()) {
                    return Ok(Some(r));
                }
                continue;
            }
            self.map.local.check_open()?;
            self.started = true;
            match self
                .pages
                .next_page(self.map.local.store().as_ref())
                .await?
            {
                Some(page) => self.page = page.into(),
                None => return Ok(None),
            }
        }
    }

    /// The next `(key, value)`, or `None` at the end.
    ///
    /// # Errors
    /// Storage errors; [`ClientError::Decode`] for a value that is not a
    /// `V` (the stream continues after it).
    pub async fn next(&mut self) -> Option<Result<(String, V), ClientError>> {
        match self.next_record().await {
            Ok(Some(r)) => {
                let bytes = r.value.as_deref().unwrap_or_default();
                Some(self.map.decode(&r.key, bytes).map(|v| (r.key, v)))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Collects the remaining entries (only for maps known to be small):
    /// from the working set, without a store read, when it holds the
    /// whole map and the stream has not started (a full read of the map
    /// under way, a preload say, is waited for).
    ///
    /// # Errors
    /// The first error met.
    pub async fn collect(mut self) -> Result<Vec<(String, V)>, ClientError> {
        if !self.started {
            let held = crate::complete::held(&self.map.local, &self.map.shared).await?;
            if let Some(records) = held {
                let now = self.map.local.now_millis();
                return records
                    .iter()
                    .filter_map(|(key, record)| Some((key, record.live_value(now)?)))
                    .map(|(key, bytes)| Ok((key.clone(), self.map.decode(key, bytes)?)))
                    .collect();
            }
        }
        let mut out = Vec::new();
        while let Some(item) = self.next().await {
            out.push(item?);
        }
        Ok(out)
    }
}
