//! [`IMap`]: a typed view of one map.

use crate::client::{ClientInner, MapShared};
use crate::error::{check_name, ClientError};
use crate::events::Subscription;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use topgun_storage::{OpId, StoreRecord};

/// Records read per store page by [`EntryStream`].
const PAGE: usize = 256;

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
    inner: Arc<ClientInner>,
    shared: Arc<MapShared>,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for IMap<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            _v: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> IMap<V> {
    pub(crate) fn new(inner: Arc<ClientInner>, shared: Arc<MapShared>) -> Self {
        Self {
            inner,
            shared,
            _v: PhantomData,
        }
    }

    /// The map's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn encode(&self, key: &str, value: &V) -> Result<Vec<u8>, ClientError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|source| ClientError::Encode {
            map: self.shared.name.to_string(),
            key: key.to_owned(),
            source,
        })?;
        if bytes.len() > crate::MAX_VALUE_LEN {
            return Err(ClientError::ValueTooLarge {
                map: self.shared.name.to_string(),
                key: key.to_owned(),
                len: bytes.len(),
                max: crate::MAX_VALUE_LEN,
            });
        }
        Ok(bytes)
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<V, ClientError> {
        rmp_serde::from_slice(bytes).map_err(|source| ClientError::Decode {
            map: self.shared.name.to_string(),
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
        self.inner.write(&self.shared, key, Some(bytes), None).await
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
        self.inner
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
        self.inner.check_open()?;
        check_name("key", key)?;
        let now = self.inner.now_millis();
        // Hot path: a working-set hit copies out only the value's `Arc`.
        let hit = self
            .inner
            .ws()
            .get(&self.shared.name, key)
            .map(|r| r.live_value(now).cloned());
        let value = match hit {
            Some(value) => value,
            None => match self.inner.load(&self.shared, key).await? {
                Some(record) => record.live_value(now).cloned(),
                None => None,
            },
        };
        value.map(|bytes| self.decode(key, &bytes)).transpose()
    }

    /// Removes `key`: stores a tombstone (pending) and a REMOVE op in one
    /// transaction. Removing an absent key still records the removal, so
    /// it wins over older writes elsewhere.
    ///
    /// # Errors
    /// As for [`put`](Self::put).
    pub async fn remove(&self, key: &str) -> Result<OpId, ClientError> {
        self.inner.write(&self.shared, key, None, None).await
    }

    /// Clears the map: one CLEAR op and a tombstone, at one timestamp, for
    /// every key that is live here now, in one transaction. Subscribers get
    /// a removal event per key.
    ///
    /// Once synced, a clear converges like removes of those keys: the sync
    /// engine sends a REMOVE for each tombstone the clear wrote (the wire
    /// protocol has no CLEAR), so a key written elsewhere after the clear's
    /// timestamp survives, and keys this client had never seen are not
    /// cleared.
    ///
    /// # Errors
    /// Storage errors; then nothing was cleared.
    pub async fn clear(&self) -> Result<OpId, ClientError> {
        self.inner.check_open()?;
        let timestamp = self.inner.hlc.now();
        let outcome = self
            .inner
            .store
            .clear_map(&self.shared.name, timestamp.clone())
            .await?;
        self.inner.ws().invalidate_map(&self.shared.name);
        for key in &outcome.removed_keys {
            self.inner.signal_sync(&self.shared.name, key, &timestamp);
            self.inner.publish(
                &self.shared,
                key,
                None,
                None,
                crate::Origin::Local,
                timestamp.clone(),
            );
        }
        Ok(outcome.op_id)
    }

    /// Every live entry in key order, read from the store page by page (so
    /// a map larger than RAM can be walked). Values are decoded as `V`.
    pub fn entries(&self) -> EntryStream<V> {
        EntryStream {
            map: self.clone(),
            after: None,
            page: VecDeque::new(),
            done: false,
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
        let record = self.inner.store.get(&self.shared.name, key).await?;
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
        Subscription::new(self.shared.events.subscribe())
    }

    /// Runs a query over the map's records in the store (so results are
    /// right even for records the working set evicted), streaming through
    /// the map page by page; memory is O(limit) for a limited query.
    ///
    /// # Errors
    /// [`ClientError::Query`] for an invalid query (unknown op, a regex that
    /// does not compile, a value of the wrong type for its op, a bad
    /// cursor); [`ClientError::Decode`] if a row is not a `V`; storage
    /// errors.
    pub async fn query(
        &self,
        query: &crate::query::Query,
    ) -> Result<crate::QueryPage<V>, ClientError> {
        self.inner.check_open()?;
        let compiled = crate::query::QueryExt::compile(query)?;
        let result = crate::query::run_query(
            self.inner.store.as_ref(),
            &self.shared.name,
            &compiled,
            self.inner.now_millis(),
        )
        .await?;
        crate::live_query::typed_page(&self.shared.name, result)
    }

    /// Starts a live query: its initial result, then every change to it as
    /// writes to this map happen (ENTER / UPDATE / LEAVE).
    ///
    /// # Errors
    /// As for [`query`](Self::query).
    pub async fn live_query(
        &self,
        query: crate::query::Query,
    ) -> Result<crate::LiveQueryHandle<V>, ClientError> {
        self.inner.check_open()?;
        crate::LiveQueryHandle::start(self.clone(), query).await
    }

    pub(crate) fn shared(&self) -> &Arc<MapShared> {
        &self.shared
    }

    pub(crate) fn inner(&self) -> &Arc<ClientInner> {
        &self.inner
    }
}

/// Live entries of a map in key order, fetched from the store a page at a
/// time. Obtain one with [`IMap::entries`].
#[derive(Debug)]
pub struct EntryStream<V> {
    map: IMap<V>,
    after: Option<String>,
    page: VecDeque<StoreRecord>,
    done: bool,
}

impl<V: Serialize + DeserializeOwned> EntryStream<V> {
    /// The next live record (tombstones and expired records skipped).
    async fn next_record(&mut self) -> Result<Option<StoreRecord>, ClientError> {
        loop {
            if let Some(r) = self.page.pop_front() {
                if r.is_live(self.map.inner.now_millis()) {
                    return Ok(Some(r));
                }
                continue;
            }
            if self.done {
                return Ok(None);
            }
            self.map.inner.check_open()?;
            let page = self
                .map
                .inner
                .store
                .scan(&self.map.shared.name, self.after.as_deref(), PAGE)
                .await?;
            self.done = page.len() < PAGE;
            self.after = page.last().map(|r| r.key.clone());
            self.page = page.into();
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

    /// Collects the remaining entries (only for maps known to be small).
    ///
    /// # Errors
    /// The first error met.
    pub async fn collect(mut self) -> Result<Vec<(String, V)>, ClientError> {
        let mut out = Vec::new();
        while let Some(item) = self.next().await {
            out.push(item?);
        }
        Ok(out)
    }
}
