//! Typed query results and live query subscriptions on an [`IMap`].

use crate::error::ClientError;
use crate::events::RecvError;
use crate::hub::MapShared;
use crate::local::LocalData;
use crate::query::{
    ChangeType, CompiledQuery, LiveQuery, LiveUpdate, Query, QueryChange, QueryExt, QueryResult,
    QueryRows,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{broadcast, Notify};

/// Rows kept beyond a live query's limit so that most removals from the
/// window are refilled without reading the store.
const LIVE_OVERFLOW: usize = 32;
/// Changes buffered per live query before a slow reader lags.
const LIVE_BUFFER: usize = 1024;

/// One page of query results, decoded as the map's value type.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage<V> {
    /// `(key, value)` rows in the query's order.
    pub results: Vec<(String, V)>,
    /// Whether more rows follow (pass `next_cursor` to get them).
    pub has_more: bool,
    /// Cursor for the next page, when `has_more`.
    pub next_cursor: Option<String>,
    /// Stored values skipped because they could not be decoded.
    pub undecodable: u64,
}

/// A change to a live query's result (TopGun's `QUERY_UPDATE`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveChange<V> {
    /// The key that entered, changed within, or left the result.
    pub key: String,
    /// Its value now (`None` when it left).
    pub value: Option<V>,
    /// `Enter`, `Update` or `Leave`.
    pub change_type: ChangeType,
}

fn to_typed<V: DeserializeOwned>(
    map: &str,
    key: &str,
    v: serde_json::Value,
) -> Result<V, ClientError> {
    // Read straight out of the JSON form the value reached from
    // MessagePack (no second encoding).
    V::deserialize(v).map_err(|e| decode_error(map, key, e))
}

fn decode_error(map: &str, key: &str, error: serde_json::Error) -> ClientError {
    ClientError::Decode {
        map: map.to_owned(),
        key: key.to_owned(),
        source: serde::de::Error::custom(error),
    }
}

pub(crate) fn typed_page<V: DeserializeOwned>(
    map: &str,
    rows: QueryRows<'_>,
) -> Result<QueryPage<V>, ClientError> {
    let results = rows
        .results
        .into_iter()
        .map(|(k, v)| {
            let typed = match v {
                Cow::Owned(v) => to_typed(map, &k, v),
                Cow::Borrowed(v) => V::deserialize(v).map_err(|e| decode_error(map, &k, e)),
            };
            typed.map(|v| (k, v))
        })
        .collect::<Result<_, _>>()?;
    Ok(QueryPage {
        results,
        has_more: rows.has_more,
        next_cursor: rows.next_cursor,
        undecodable: rows.undecodable,
    })
}

/// A live query's state: while its initial result is read, the changes
/// that arrive are kept, to be applied on top of it.
enum LiveState {
    Starting(Vec<QueuedWrite>),
    Running(Box<LiveQuery>),
}

/// A write that reached a starting live query: key, value, expiry.
type QueuedWrite = (String, Option<serde_json::Value>, Option<u64>);

struct Shared {
    live: Mutex<LiveState>,
    tx: broadcast::Sender<QueryChange>,
    refill: AtomicBool,
    /// Bumped on every applied write, to detect writes racing a refill.
    generation: AtomicU64,
    /// Wakes a waiting reader when a write moved the next expiry earlier
    /// without changing the result (the same value with a shorter TTL).
    expiry_moved: Notify,
}

/// A live query: its current result, and the changes to it as writes
/// happen. Obtain one with [`IMap::live_query`](crate::IMap::live_query).
/// Dropping it unsubscribes.
///
/// Changes are computed incrementally on each write (a write costs
/// O(log(limit)) per live query of its map, never a rescan). When a
/// sorted, limited window loses rows it cannot refill from its buffer, the
/// next [`next`](Self::next) re-reads the store once.
///
/// A row whose TTL passes leaves the result: its LEAVE arrives when the
/// TTL passes (with the client's runtime as timer, see
/// [`TopGunClientBuilder::runtime`](crate::TopGunClientBuilder::runtime)),
/// or at the next change or read without one.
///
/// A reader more than 1,024 changes behind gets [`RecvError::Lagged`];
/// [`results`](Self::results) then gives the current result to resync from.
pub struct LiveQueryHandle<V: Serialize + DeserializeOwned> {
    local: Arc<LocalData>,
    map: Arc<MapShared>,
    shared: Arc<Shared>,
    rx: broadcast::Receiver<QueryChange>,
    pending: VecDeque<QueryChange>,
    listener: u64,
    _v: PhantomData<fn() -> V>,
}

impl Shared {
    /// Applies one write to the running query and sends its changes.
    fn apply(
        &self,
        live: &mut LiveQuery,
        key: &str,
        value: Option<&serde_json::Value>,
        expires_at: Option<u64>,
    ) {
        let before = live.next_expiry();
        let update = live.apply_expiring(key, value, expires_at);
        if let Some(at) = live.next_expiry() {
            if before.is_none_or(|b| at < b) {
                self.expiry_moved.notify_one();
            }
        }
        self.send(update);
    }

    /// Turns the rows expired at `now` into LEAVEs (and the rows that
    /// take their place into ENTERs) and sends them.
    fn expire(&self, now: u64) {
        let mut state = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let LiveState::Running(live) = &mut *state {
            if live.next_expiry().is_some_and(|at| at <= now) {
                let update = live.expire(now);
                self.send(update);
            }
        }
    }

    fn send(&self, update: LiveUpdate) {
        for change in update.changes {
            // No receiver means the handle is being dropped.
            let _ = self.tx.send(change);
        }
        if update.needs_refill {
            self.refill.store(true, Ordering::Release);
        }
    }

    fn running<T>(&self, f: impl FnOnce(&mut LiveQuery) -> T) -> Option<T> {
        match &mut *self.live.lock().unwrap_or_else(PoisonError::into_inner) {
            LiveState::Running(live) => Some(f(live)),
            LiveState::Starting(_) => None,
        }
    }
}

impl<V: Serialize + DeserializeOwned> std::fmt::Debug for LiveQueryHandle<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQueryHandle")
            .field("map", self.map.name())
            .finish_non_exhaustive()
    }
}

impl<V: Serialize + DeserializeOwned> LiveQueryHandle<V> {
    /// Registers the live query first, then reads its initial result and
    /// applies what was written meanwhile on top, so that no write falls
    /// between the result and the stream.
    pub(crate) async fn start(
        local: Arc<LocalData>,
        map: Arc<MapShared>,
        query: Query,
    ) -> Result<Self, ClientError> {
        let compiled = query.compile()?;
        let (tx, rx) = broadcast::channel(LIVE_BUFFER);
        let shared = Arc::new(Shared {
            live: Mutex::new(LiveState::Starting(Vec::new())),
            tx,
            refill: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            expiry_moved: Notify::new(),
        });
        let s = shared.clone();
        let resync = Arc::downgrade(&shared);
        let listener = map.live().add(
            Box::new(move |key, new, expires_at| {
                let value = new.and_then(|b| rmp_serde::from_slice::<serde_json::Value>(b).ok());
                let mut state = s.live.lock().unwrap_or_else(PoisonError::into_inner);
                s.generation.fetch_add(1, Ordering::AcqRel);
                match &mut *state {
                    LiveState::Starting(queued) => queued.push((key.to_owned(), value, expires_at)),
                    LiveState::Running(live) => s.apply(live, key, value.as_ref(), expires_at),
                }
            }),
            Box::new(move || {
                if let Some(s) = resync.upgrade() {
                    s.refill.store(true, Ordering::Release);
                    s.expiry_moved.notify_one();
                }
            }),
        );
        let handle = Self {
            local,
            map,
            shared,
            rx,
            pending: VecDeque::new(),
            listener,
            _v: PhantomData,
        };
        let initial = handle.read(&compiled).await?;
        let mut state = handle
            .shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let queued = match std::mem::replace(
            &mut *state,
            LiveState::Running(Box::new(LiveQuery::new(compiled, initial))),
        ) {
            LiveState::Starting(queued) => queued,
            LiveState::Running(_) => Vec::new(),
        };
        if let LiveState::Running(live) = &mut *state {
            for (key, value, expires_at) in queued {
                handle.shared.apply(live, &key, value.as_ref(), expires_at);
            }
        }
        drop(state);
        Ok(handle)
    }

    async fn read(&self, query: &CompiledQuery) -> Result<QueryResult, ClientError> {
        Ok(crate::query::run_query_with_overflow(
            self.local.store().as_ref(),
            self.map.name(),
            query,
            self.local.now_millis(),
            LIVE_OVERFLOW,
        )
        .await?)
    }

    /// The current result rows, in the query's order. Rows whose TTL has
    /// passed are gone (their LEAVE is queued for [`next`](Self::next)).
    ///
    /// # Errors
    /// [`ClientError::Decode`] if a row is not a `V`.
    pub fn results(&self) -> Result<Vec<(String, V)>, ClientError> {
        self.shared.expire(self.local.now_millis());
        let rows = self
            .shared
            .running(|live| live.to_results())
            .unwrap_or_default();
        rows.into_iter()
            .map(|(k, v)| to_typed(self.map.name(), &k, v).map(|v| (k, v)))
            .collect()
    }

    /// Re-reads the store for a window that ran out of buffered rows, until
    /// no write raced the read.
    async fn refill(&mut self) -> Result<(), ClientError> {
        while self.shared.refill.swap(false, Ordering::AcqRel) {
            let before = self.shared.generation.load(Ordering::Acquire);
            let Some(query) = self.shared.running(|live| live.query().clone()) else {
                continue;
            };
            let fresh = self.read(&query).await?;
            let mut state = self
                .shared
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.shared.generation.load(Ordering::Acquire) != before {
                // A write landed while we read; read again.
                self.shared.refill.store(true, Ordering::Release);
                continue;
            }
            if let LiveState::Running(live) = &mut *state {
                self.pending.extend(live.reset(fresh));
            }
        }
        Ok(())
    }

    /// Waits for the next change to the result.
    ///
    /// # Errors
    /// [`ClientError::Decode`] if the value is not a `V`; storage errors
    /// while refilling a window; a lag or close is reported as
    /// [`LiveQueryError::Recv`].
    pub async fn next(&mut self) -> Result<LiveChange<V>, LiveQueryError> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return self.typed(c);
            }
            self.shared.expire(self.local.now_millis());
            match self.rx.try_recv() {
                Ok(c) => return self.typed(c),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    return Err(LiveQueryError::Recv(RecvError::Lagged(n)))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    return Err(LiveQueryError::Recv(RecvError::Closed))
                }
                Err(broadcast::error::TryRecvError::Empty) => {}
            }
            if self.shared.refill.load(Ordering::Acquire) {
                self.refill().await?;
                continue;
            }
            let expiry = self
                .shared
                .running(|live| live.next_expiry())
                .flatten()
                .and_then(|at| self.local.sleep_until(at));
            let received = match expiry {
                Some(timer) => tokio::select! {
                    received = self.rx.recv() => received,
                    () = timer => continue,
                    () = self.shared.expiry_moved.notified() => continue,
                },
                None => tokio::select! {
                    received = self.rx.recv() => received,
                    () = self.shared.expiry_moved.notified() => continue,
                },
            };
            match received {
                Ok(c) => {
                    // Changes queued before a refill come first.
                    self.pending.push_back(c);
                    if self.shared.refill.load(Ordering::Acquire) {
                        self.refill().await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(LiveQueryError::Recv(RecvError::Lagged(n)))
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(LiveQueryError::Recv(RecvError::Closed))
                }
            }
        }
    }

    fn typed(&self, c: QueryChange) -> Result<LiveChange<V>, LiveQueryError> {
        let value = match c.value {
            Some(v) => Some(to_typed(self.map.name(), &c.key, v)?),
            None => None,
        };
        Ok(LiveChange {
            key: c.key,
            value,
            change_type: c.change_type,
        })
    }
}

impl<V: Serialize + DeserializeOwned> Drop for LiveQueryHandle<V> {
    fn drop(&mut self) {
        self.map.live().remove(self.listener);
    }
}

/// Why [`LiveQueryHandle::next`] returned no change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveQueryError {
    /// Decoding a value or re-reading the store failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The reader lagged (call `results()` to resync) or the client closed.
    #[error(transparent)]
    Recv(RecvError),
}
