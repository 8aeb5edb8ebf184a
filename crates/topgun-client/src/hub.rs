//! [`MapHub`]: the registry of open maps and the fan-out of their changes
//! to subscribers, live queries and the client-wide change feed.

use crate::events::{Origin, Published, RawEvent, EVENT_BUFFER};
use crate::live::LiveQueries;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::broadcast;
use topgun_core::Timestamp;

/// Changes the client-wide feed holds for a slow reader before it lags.
/// Its slots are allocated when the client opens, so each holds an `Arc`
/// (a pointer) rather than a [`Change`].
const FEED_BUFFER: usize = 8192;

/// One change to one key, as published to subscribers: what another
/// process sharing the data needs to keep its working set, subscribers and
/// live queries right.
#[cfg_attr(not(all(feature = "redb", unix)), allow(dead_code))] // Used by `shared_dir`.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) map: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) old: Option<Arc<[u8]>>,
    pub(crate) new: Option<Arc<[u8]>>,
    pub(crate) origin: Origin,
    pub(crate) timestamp: Timestamp,
    pub(crate) ttl_ms: Option<u64>,
}

/// One open map: its name, its event channel, its live queries, the
/// client-wide feed its changes also go to, and the state of its full
/// read into the working set (see `complete.rs`).
#[derive(Debug)]
pub(crate) struct MapShared {
    name: Arc<str>,
    events: broadcast::Sender<Published>,
    live: LiveQueries,
    feed: broadcast::Sender<Arc<Change>>,
    /// One full read at a time: queries that arrive meanwhile wait for it.
    full_read: tokio::sync::Mutex<()>,
    /// The map had more records than the working set holds for one map
    /// when last read in full: its queries go to the store.
    too_big: AtomicBool,
    /// A preload of the map was asked for (it runs once).
    preload_asked: AtomicBool,
    /// A preload of the map is to start later (see `IMap::preload_later`).
    preload_due: AtomicBool,
}

impl MapShared {
    /// The map's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// A receiver of the map's changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.events.subscribe()
    }

    /// The map's live queries.
    pub(crate) fn live(&self) -> &LiveQueries {
        &self.live
    }

    /// Held while the map is read in full into the working set.
    pub(crate) fn full_read(&self) -> &tokio::sync::Mutex<()> {
        &self.full_read
    }

    /// Whether the map was too big to hold in full when last read.
    pub(crate) fn too_big(&self) -> bool {
        self.too_big.load(Ordering::Relaxed)
    }

    /// Records that the map was too big to hold in full.
    pub(crate) fn set_too_big(&self) {
        self.too_big.store(true, Ordering::Relaxed);
    }

    /// Whether this is the first preload asked of the map.
    pub(crate) fn first_preload(&self) -> bool {
        !self.preload_asked.swap(true, Ordering::Relaxed)
    }

    /// Records that a preload of the map is to start later.
    pub(crate) fn set_preload_due(&self) {
        self.preload_due.store(true, Ordering::Relaxed);
    }

    /// Whether a preload of the map is due and has not started.
    pub(crate) fn preload_due(&self) -> bool {
        self.preload_due.load(Ordering::Relaxed) && !self.preload_asked.load(Ordering::Relaxed)
    }

    /// After a clear: the map may fit in the working set again.
    pub(crate) fn may_fit_again(&self) {
        self.too_big.store(false, Ordering::Relaxed);
    }

    /// Whether anyone listens to the map's changes (subscribers or live
    /// queries), so a writer can skip gathering old values for nobody.
    pub(crate) fn has_listeners(&self) -> bool {
        self.events.receiver_count() > 0 || !self.live.is_empty()
    }

    /// Tells live queries and subscribers that `key` changed from `old`
    /// to `new`, written at `timestamp` with a TTL of `ttl_ms`.
    pub(crate) fn publish(
        &self,
        key: &str,
        old: Option<Arc<[u8]>>,
        new: Option<Arc<[u8]>>,
        origin: Origin,
        timestamp: Timestamp,
        ttl_ms: Option<u64>,
    ) {
        let expires_at = topgun_query::expires_at(&timestamp, ttl_ms);
        self.live.on_change(key, new.as_deref(), expires_at);
        let (feed, events) = (
            self.feed.receiver_count() > 0,
            self.events.receiver_count() > 0,
        );
        if !feed && !events {
            return;
        }
        let key: Arc<str> = Arc::from(key);
        if feed {
            // No reader is not an error.
            let _ = self.feed.send(Arc::new(Change {
                map: self.name.clone(),
                key: key.clone(),
                old: old.clone(),
                new: new.clone(),
                origin,
                timestamp: timestamp.clone(),
                ttl_ms,
            }));
        }
        if events {
            // No subscriber is not an error.
            let _ = self.events.send(Published::Change(RawEvent {
                key,
                old,
                new,
                origin,
                timestamp,
            }));
        }
    }

    /// Tells subscribers that changes made elsewhere were lost on their
    /// way here.
    fn missed(&self) {
        // No subscriber is not an error.
        let _ = self.events.send(Published::Missed);
    }
}

/// The maps opened so far, by name, and the feed of all their changes.
#[derive(Debug)]
pub(crate) struct MapHub {
    maps: Mutex<HashMap<String, Arc<MapShared>>>,
    feed: broadcast::Sender<Arc<Change>>,
}

impl Default for MapHub {
    fn default() -> Self {
        Self {
            maps: Mutex::default(),
            feed: broadcast::Sender::new(FEED_BUFFER),
        }
    }
}

impl MapHub {
    /// Every change to every map from now on (a reader that falls more
    /// than [`FEED_BUFFER`] behind lags).
    #[cfg_attr(not(all(feature = "redb", unix)), allow(dead_code))] // Used by `shared_dir`.
    pub(crate) fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    /// The map `name`, opened on first use.
    pub(crate) fn map(&self, name: &str) -> Arc<MapShared> {
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = maps.get(name) {
            return map.clone();
        }
        let map = Arc::new(MapShared {
            name: Arc::from(name),
            events: broadcast::Sender::new(EVENT_BUFFER),
            live: LiveQueries::default(),
            feed: self.feed.clone(),
            full_read: tokio::sync::Mutex::new(()),
            too_big: AtomicBool::new(false),
            preload_asked: AtomicBool::new(false),
            preload_due: AtomicBool::new(false),
        });
        maps.insert(name.to_owned(), map.clone());
        map
    }

    /// Has every live query of every map read its result again.
    pub(crate) fn resync_live_queries(&self) {
        for map in self.open_maps() {
            map.live.resync();
        }
    }

    /// Tells the subscribers of every map that changes made elsewhere
    /// were lost on their way here
    /// ([`RecvError::Missed`](crate::events::RecvError::Missed)).
    pub(crate) fn changes_missed(&self) {
        for map in self.open_maps() {
            map.missed();
        }
    }

    fn open_maps(&self) -> Vec<Arc<MapShared>> {
        self.maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Forgets every map: their subscribers see the stream end once the
    /// last handle on each is gone.
    pub(crate) fn close(&self) {
        self.maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A [`Change`] as bytes travel it to another process (a shared data
/// directory's socket) or tab (a BroadcastChannel).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChangeFrame {
    map: String,
    key: String,
    #[serde(with = "serde_bytes")]
    old: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    new: Option<Vec<u8>>,
    remote: bool,
    timestamp: Timestamp,
    ttl_ms: Option<u64>,
}

#[cfg_attr(
    not(any(
        all(feature = "redb", unix),
        all(feature = "indexeddb", target_family = "wasm")
    )),
    allow(dead_code)
)]
impl From<&Change> for ChangeFrame {
    fn from(c: &Change) -> Self {
        Self {
            map: c.map.to_string(),
            key: c.key.to_string(),
            old: c.old.as_deref().map(<[u8]>::to_vec),
            new: c.new.as_deref().map(<[u8]>::to_vec),
            remote: c.origin == Origin::Remote,
            timestamp: c.timestamp.clone(),
            ttl_ms: c.ttl_ms,
        }
    }
}

impl From<ChangeFrame> for Change {
    fn from(c: ChangeFrame) -> Self {
        Self {
            map: Arc::from(c.map),
            key: Arc::from(c.key),
            old: c.old.map(Arc::from),
            new: c.new.map(Arc::from),
            origin: if c.remote {
                Origin::Remote
            } else {
                Origin::Local
            },
            timestamp: c.timestamp,
            ttl_ms: c.ttl_ms,
        }
    }
}
