//! Change events of a map.
//!
//! Every change to a map — a local `put`/`remove`/`clear`, and later a merge
//! of a remote record — is published to the map's subscribers.
//!
//! **Overflow policy.** Each subscriber has a bounded buffer
//! ([`EVENT_BUFFER`] events). Writers never wait for subscribers: when a
//! subscriber falls further behind than the buffer, its oldest unread events
//! are dropped and its next [`Subscription::recv`] returns
//! [`RecvError::Lagged`] with how many it missed; it then continues with the
//! oldest event still buffered. A subscriber that lagged can re-read the map
//! to resynchronise.
//!
//! **Changes missed elsewhere.** Where several tabs or processes share one
//! database, each hears of the others' changes from a stream between them.
//! When that stream loses changes (its sender fell behind, or the process
//! that streamed them went away), this client re-reads what it cached and
//! every subscriber's next [`Subscription::recv`] returns
//! [`RecvError::Missed`]: the map changed in ways it was not told of one by
//! one. It then continues with the changes that follow.

use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;
use tokio::sync::broadcast;
use topgun_core::Timestamp;

/// Events buffered per subscriber before the oldest are dropped.
pub const EVENT_BUFFER: usize = 1024;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A write through this client.
    Local,
    /// A record merged from the server.
    Remote,
}

/// A change as published internally: values still encoded, so one event
/// serves subscribers of any value type.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub(crate) key: Arc<str>,
    pub(crate) old: Option<Arc<[u8]>>,
    pub(crate) new: Option<Arc<[u8]>>,
    pub(crate) origin: Origin,
    pub(crate) timestamp: Timestamp,
}

/// What a map's subscribers are sent.
#[derive(Debug, Clone)]
pub(crate) enum Published {
    /// One change.
    Change(RawEvent),
    /// Changes made in another tab or process were lost on their way here
    /// (see the module's "Changes missed elsewhere").
    Missed,
}

/// A change to one key of a map (TopGun's `entryUpdated`).
#[derive(Debug, Clone, PartialEq)]
pub struct MapEvent<V> {
    /// The key that changed.
    pub key: String,
    /// The value before the change (`None`: absent or deleted).
    pub old_value: Option<V>,
    /// The value after the change (`None`: deleted).
    pub new_value: Option<V>,
    /// Local write or remote merge.
    pub origin: Origin,
    /// The HLC timestamp of the change.
    pub timestamp: Timestamp,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber fell behind and this many events were dropped for it
    /// (see the module's overflow policy). Later calls continue.
    #[error("subscriber lagged: {0} events were dropped")]
    Lagged(u64),
    /// Changes made in another tab or process sharing the database were
    /// lost on their way to this client: their events will not come.
    /// Read the map again. Later calls continue.
    #[error("changes made in another tab or process were missed: read the map again")]
    Missed,
    /// The client was closed; no more events will come.
    #[error("the client is closed")]
    Closed,
    /// An event's value could not be decoded as this subscription's type.
    #[error("could not decode an event value for key {key}: {source}")]
    Decode {
        /// The key of the undecodable event.
        key: String,
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
}

/// A stream of a map's changes, from [`IMap::subscribe`](crate::IMap::subscribe).
#[derive(Debug)]
pub struct Subscription<V> {
    rx: broadcast::Receiver<Published>,
    _v: PhantomData<fn() -> V>,
}

impl<V: DeserializeOwned> Subscription<V> {
    pub(crate) fn new(rx: broadcast::Receiver<Published>) -> Self {
        Self {
            rx,
            _v: PhantomData,
        }
    }

    /// Waits for the next change.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] once after events were dropped for this slow
    /// subscriber; [`RecvError::Missed`] once after changes made elsewhere
    /// were lost; [`RecvError::Closed`] when the client is gone;
    /// [`RecvError::Decode`] for a value of another type.
    pub async fn recv(&mut self) -> Result<MapEvent<V>, RecvError> {
        match self.rx.recv().await {
            Ok(published) => decode_event(published),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
        }
    }

    /// The next change if one is already buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<MapEvent<V>, RecvError>> {
        match self.rx.try_recv() {
            Ok(published) => Some(decode_event(published)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            Err(broadcast::error::TryRecvError::Empty) => None,
        }
    }
}

fn decode_event<V: DeserializeOwned>(published: Published) -> Result<MapEvent<V>, RecvError> {
    let raw = match published {
        Published::Change(raw) => raw,
        Published::Missed => return Err(RecvError::Missed),
    };
    let decode = |bytes: &Option<Arc<[u8]>>| -> Result<Option<V>, RecvError> {
        bytes
            .as_deref()
            .map(rmp_serde::from_slice)
            .transpose()
            .map_err(|source| RecvError::Decode {
                key: raw.key.to_string(),
                source,
            })
    };
    Ok(MapEvent {
        old_value: decode(&raw.old)?,
        new_value: decode(&raw.new)?,
        key: raw.key.to_string(),
        origin: raw.origin,
        timestamp: raw.timestamp,
    })
}
