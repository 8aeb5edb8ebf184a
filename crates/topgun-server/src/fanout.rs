//! Who hears about which change: per-connection outgoing queues
//! ([`Outbox`]) and the map subscriptions ([`Hub`]) that route committed
//! changes to them as `SERVER_EVENT` and `QUERY_UPDATE`.

use crate::query::Filter;
use crate::records;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{mpsc, watch};
use topgun_core::wire::{ChangeType, Message, OpType, QueryUpdate, ServerEvent, WireRecord};
use topgun_storage::StoreRecord;

/// A connection's id, unique within one server run.
pub(crate) type ConnId = u64;

/// Why the server closes a connection; becomes the WebSocket close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Graceful shutdown.
    ShuttingDown,
    /// `AUTH` with a bad token.
    AuthFailed,
    /// The outgoing queue was full: the client does not read fast enough.
    SlowConsumer,
    /// No frame within the idle timeout.
    Idle,
}

impl CloseReason {
    /// The close code and reason text.
    pub(crate) fn frame(self) -> (u16, &'static str) {
        match self {
            CloseReason::ShuttingDown => (1001, "server shutting down"),
            CloseReason::AuthFailed => (1008, "authentication failed"),
            CloseReason::SlowConsumer => (1008, "slow consumer: outgoing queue full"),
            CloseReason::Idle => (1000, "idle timeout"),
        }
    }
}

/// One item of a connection's outgoing queue.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message to send (boxed: messages are large, events and bytes
    /// small).
    Frame(Box<Message>),
    /// An already encoded message (encoded early to split or shrink it to
    /// fit a frame).
    Bytes(Vec<u8>),
    /// A change event; consecutive events are coalesced into one
    /// `SERVER_BATCH_EVENT`.
    Event(Arc<ServerEvent>),
    /// Send a close frame and stop.
    Close(CloseReason),
}

/// The sending side of a connection's bounded outgoing queue. Pushing
/// never waits: a full queue disconnects the connection instead.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    conn: ConnId,
    queue: mpsc::Sender<Outgoing>,
    kill: Arc<watch::Sender<Option<CloseReason>>>,
}

impl Outbox {
    /// A queue of `capacity` items, its receiver, and the kill switch the
    /// connection's tasks watch.
    pub(crate) fn new(
        conn: ConnId,
        capacity: usize,
    ) -> (
        Self,
        mpsc::Receiver<Outgoing>,
        watch::Receiver<Option<CloseReason>>,
    ) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let (kill, kill_rx) = watch::channel(None);
        let outbox = Self {
            conn,
            queue,
            kill: Arc::new(kill),
        };
        (outbox, rx, kill_rx)
    }

    /// The connection this queue belongs to.
    pub(crate) fn conn(&self) -> ConnId {
        self.conn
    }

    /// Queues an item. If the queue is full the connection is killed as a
    /// slow consumer; if it is gone the item is dropped.
    pub(crate) fn push(&self, item: Outgoing) {
        match self.queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    conn = self.conn,
                    "outgoing queue full, disconnecting slow consumer"
                );
                self.kill(CloseReason::SlowConsumer);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues a message.
    pub(crate) fn send(&self, msg: Message) {
        self.push(Outgoing::Frame(Box::new(msg)));
    }

    /// Ends the connection now: both of its tasks stop, queued items are
    /// dropped. The first reason given wins.
    pub(crate) fn kill(&self, reason: CloseReason) {
        self.kill.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// A committed change to fan out.
#[derive(Debug)]
pub(crate) struct Change {
    /// The map changed.
    pub(crate) map_name: String,
    /// The key changed.
    pub(crate) key: String,
    /// The record now stored (a tombstone for a remove).
    pub(crate) record: WireRecord,
    /// The record it replaced, if any.
    pub(crate) previous: Option<StoreRecord>,
}

#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    /// Query id → filter.
    queries: HashMap<String, Filter>,
}

/// Map subscriptions: map → connection → its live queries on that map.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    maps: Mutex<HashMap<String, HashMap<ConnId, Subscriber>>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<ConnId, Subscriber>>> {
        // Updates are single map operations; a poisoned lock is consistent.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes `outbox`'s connection to `map` under `query_id`.
    pub(crate) fn subscribe(&self, outbox: &Outbox, map: &str, query_id: &str, filter: Filter) {
        self.lock()
            .entry(map.to_owned())
            .or_default()
            .entry(outbox.conn())
            .or_insert_with(|| Subscriber {
                outbox: outbox.clone(),
                queries: HashMap::new(),
            })
            .queries
            .insert(query_id.to_owned(), filter);
    }

    /// Ends query `query_id` of `conn` on `map`; the connection stops
    /// hearing about the map when it was its last query there.
    pub(crate) fn unsubscribe(&self, conn: ConnId, map: &str, query_id: &str) {
        let mut maps = self.lock();
        let Some(subs) = maps.get_mut(map) else {
            return;
        };
        if let Some(sub) = subs.get_mut(&conn) {
            sub.queries.remove(query_id);
            if sub.queries.is_empty() {
                subs.remove(&conn);
            }
        }
        if subs.is_empty() {
            maps.remove(map);
        }
    }

    /// Sends each change to every connection subscribed to its map except
    /// `origin`: a `SERVER_EVENT` (with the record, a tombstone for a
    /// remove), and a `QUERY_UPDATE` for each of its queries whose result
    /// set the change enters, updates or leaves. A connection gets all the
    /// events of one call first (so its writer can coalesce them), then
    /// the query updates. Never waits.
    pub(crate) fn publish(&self, origin: ConnId, changes: &[Change]) {
        let maps = self.lock();
        let mut out: HashMap<ConnId, ToSend<'_>> = HashMap::new();
        for change in changes {
            let Some(subs) = maps.get(&change.map_name) else {
                continue;
            };
            if subs.keys().all(|&conn| conn == origin) {
                continue;
            }
            let event = Arc::new(ServerEvent {
                map_name: change.map_name.clone(),
                event_type: if change.record.is_tombstone() {
                    OpType::Remove
                } else {
                    OpType::Put
                },
                key: change.key.clone(),
                record: Some(change.record.clone()),
            });
            let mut previous: Option<Option<rmpv::Value>> = None;
            for (&conn, sub) in subs {
                if conn == origin {
                    continue;
                }
                let to_send = out.entry(conn).or_insert_with(|| ToSend {
                    outbox: &sub.outbox,
                    events: Vec::new(),
                    updates: Vec::new(),
                });
                to_send.events.push(event.clone());
                for (query_id, filter) in &sub.queries {
                    let before = previous
                        .get_or_insert_with(|| previous_value(change.previous.as_ref()))
                        .as_ref()
                        .is_some_and(|v| filter.matches(v));
                    let now = change.record.value.as_ref().filter(|v| filter.matches(v));
                    let change_type = match (before, now.is_some()) {
                        (false, true) => ChangeType::Enter,
                        (true, true) => ChangeType::Update,
                        (true, false) => ChangeType::Leave,
                        (false, false) => continue,
                    };
                    to_send.updates.push(Message::QueryUpdate(QueryUpdate {
                        query_id: query_id.clone(),
                        key: change.key.clone(),
                        value: now.cloned().unwrap_or(rmpv::Value::Nil),
                        change_type,
                    }));
                }
            }
        }
        for to_send in out.into_values() {
            for event in to_send.events {
                to_send.outbox.push(Outgoing::Event(event));
            }
            for update in to_send.updates {
                to_send.outbox.send(update);
            }
        }
    }

    /// Number of connections subscribed to `map`.
    #[cfg(test)]
    pub(crate) fn subscribers(&self, map: &str) -> usize {
        self.lock().get(map).map_or(0, HashMap::len)
    }

    /// Forgets every subscription of `conn`.
    pub(crate) fn remove_connection(&self, conn: ConnId) {
        let mut maps = self.lock();
        maps.retain(|_, subs| {
            subs.remove(&conn);
            !subs.is_empty()
        });
    }
}

/// What one [`Hub::publish`] call queues for one connection.
struct ToSend<'a> {
    outbox: &'a Outbox,
    events: Vec<Arc<ServerEvent>>,
    updates: Vec<Message>,
}

/// The live value a change replaced, decoded (None for none, a tombstone
/// or an undecodable value).
fn previous_value(previous: Option<&StoreRecord>) -> Option<rmpv::Value> {
    let bytes = previous?.value.as_ref()?;
    records::decode_value(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::Timestamp;

    fn change(key: &str, value: Option<rmpv::Value>) -> Change {
        let ts = Timestamp::new(1, 0, "n");
        Change {
            map_name: "m".into(),
            key: key.into(),
            record: match value {
                Some(v) => WireRecord::new(v, ts),
                None => WireRecord::tombstone(ts),
            },
            previous: None,
        }
    }

    #[test]
    fn events_skip_the_origin_and_full_queues_kill() {
        let hub = Hub::default();
        let (a, mut a_rx, _) = Outbox::new(1, 4);
        let (b, mut b_rx, b_kill) = Outbox::new(2, 2);
        hub.subscribe(&a, "m", "q", Filter::default());
        hub.subscribe(&b, "m", "q", Filter::default());
        hub.publish(1, &[change("k", Some(1.into()))]);
        assert!(a_rx.try_recv().is_err());
        assert!(matches!(b_rx.try_recv(), Ok(Outgoing::Event(e)) if e.key == "k"));
        let Ok(Outgoing::Frame(update)) = b_rx.try_recv() else {
            panic!("expected a query update")
        };
        assert!(matches!(*update, Message::QueryUpdate(u) if u.change_type == ChangeType::Enter));
        // Two more changes (4 items) overflow b's queue of 2.
        hub.publish(1, &[change("k2", Some(1.into())), change("k3", None)]);
        assert_eq!(*b_kill.borrow(), Some(CloseReason::SlowConsumer));
        hub.unsubscribe(2, "m", "q");
        assert_eq!(hub.subscribers("m"), 1);
        hub.remove_connection(1);
        assert_eq!(hub.subscribers("m"), 0);
    }
}
