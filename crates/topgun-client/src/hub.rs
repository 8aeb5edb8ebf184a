//! [`MapHub`]: the registry of open maps and the fan-out of their changes
//! to subscribers and live queries.

use crate::events::{Origin, RawEvent, EVENT_BUFFER};
use crate::live::LiveQueries;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::broadcast;
use topgun_core::Timestamp;

/// One open map: its name, its event channel, its live queries.
#[derive(Debug)]
pub(crate) struct MapShared {
    name: Arc<str>,
    events: broadcast::Sender<RawEvent>,
    live: LiveQueries,
}

impl MapShared {
    /// The map's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// A receiver of the map's changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RawEvent> {
        self.events.subscribe()
    }

    /// The map's live queries.
    pub(crate) fn live(&self) -> &LiveQueries {
        &self.live
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
        if self.events.receiver_count() > 0 {
            // No subscriber is not an error.
            let _ = self.events.send(RawEvent {
                key: Arc::from(key),
                old,
                new,
                origin,
                timestamp,
            });
        }
    }
}

/// The maps opened so far, by name.
#[derive(Debug, Default)]
pub(crate) struct MapHub {
    maps: Mutex<HashMap<String, Arc<MapShared>>>,
}

impl MapHub {
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
        });
        maps.insert(name.to_owned(), map.clone());
        map
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
