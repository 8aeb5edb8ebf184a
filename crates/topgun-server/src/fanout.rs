//! Who hears about which change: per-connection outgoing queues
//! ([`Outbox`]) and the map subscriptions ([`Hub`]) that route committed
//! changes to them as `SERVER_EVENT` and `QUERY_UPDATE`.

use crate::query::{Subscription, Subscriptions, Write};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{mpsc, watch};
use topgun_core::wire::{Message, OpType, QueryUpdate, ServerEvent, WireRecord};
use topgun_query::{CompiledQuery, QueryResult as Rows};

/// A connection's id, unique within one server run.
pub(crate) type ConnId = u64;

/// The origin of changes that no connection of this node made (another
/// node's, read from the change feed): every subscriber hears of them.
pub(crate) const NO_CONN: ConnId = 0;

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
    /// This node missed changes (it fell behind the shared store's change
    /// feed): the client must reconnect and sync again.
    Resync,
}

impl CloseReason {
    /// The close code and reason text.
    pub(crate) fn frame(self) -> (u16, &'static str) {
        match self {
            CloseReason::ShuttingDown => (1001, "server shutting down"),
            CloseReason::AuthFailed => (1008, "authentication failed"),
            CloseReason::SlowConsumer => (1008, "slow consumer: outgoing queue full"),
            CloseReason::Idle => (1000, "idle timeout"),
            CloseReason::Resync => (1012, "server missed changes; reconnect to sync"),
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
    /// The change events of one commit (one queue slot however many);
    /// consecutive events are coalesced into `SERVER_BATCH_EVENT`s.
    Events(Vec<Arc<ServerEvent>>),
    /// The `QUERY_UPDATE`s of one commit, one frame each.
    Updates(Vec<QueryUpdate>),
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
}

#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    /// Query id → its live state.
    queries: Subscriptions,
}

/// A live query whose window ran short: run it again and hand the result
/// to [`Hub::refill`].
#[derive(Debug, Clone)]
pub(crate) struct Refill {
    /// The connection.
    pub(crate) conn: ConnId,
    /// The map.
    pub(crate) map: String,
    /// The query id.
    pub(crate) query_id: String,
    /// The query to run.
    pub(crate) query: CompiledQuery,
}

/// Map subscriptions: map → connection → its live queries on that map.
///
/// Every call comes from the commit task, so the live queries see the
/// writes, expiries and refills in commit order.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    maps: Mutex<HashMap<String, HashMap<ConnId, Subscriber>>>,
}

/// What one call queues for one connection: events first (so its writer
/// can coalesce them), then query updates.
#[derive(Debug)]
struct ToSend {
    outbox: Outbox,
    events: Vec<Arc<ServerEvent>>,
    updates: Vec<QueryUpdate>,
}

/// What one call queues, per connection, and the live queries to re-run.
#[derive(Debug, Default)]
struct Outgo {
    sends: HashMap<ConnId, ToSend>,
    refills: Vec<Refill>,
}

impl Outgo {
    fn entry(&mut self, conn: ConnId, outbox: &Outbox) -> &mut ToSend {
        self.sends.entry(conn).or_insert_with(|| ToSend {
            outbox: outbox.clone(),
            events: Vec::new(),
            updates: Vec::new(),
        })
    }

    /// Queues `(updates, needs_refill)` of one live query.
    fn query(
        &mut self,
        conn: ConnId,
        outbox: &Outbox,
        map: &str,
        (query_id, sub): (&String, &Subscription),
        (updates, needs_refill): (Vec<QueryUpdate>, bool),
    ) {
        if !updates.is_empty() {
            self.entry(conn, outbox).updates.extend(updates);
        }
        let listed = |r: &Refill| r.conn == conn && r.query_id == *query_id && r.map == map;
        if needs_refill && !self.refills.iter().any(listed) {
            self.refills.push(Refill {
                conn,
                map: map.to_owned(),
                query_id: query_id.clone(),
                query: sub.query().clone(),
            });
        }
    }

    /// Queues everything; returns the live queries to run again.
    fn flush(self) -> Vec<Refill> {
        for to_send in self.sends.into_values() {
            if !to_send.events.is_empty() {
                to_send.outbox.push(Outgoing::Events(to_send.events));
            }
            if !to_send.updates.is_empty() {
                to_send.outbox.push(Outgoing::Updates(to_send.updates));
            }
        }
        self.refills
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<ConnId, Subscriber>>> {
        // Updates are single map operations; a poisoned lock is consistent.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes `outbox`'s connection to `map` with the live query `sub`
    /// (replacing one with the same id).
    pub(crate) fn subscribe(&self, outbox: &Outbox, map: &str, query_id: &str, sub: Subscription) {
        self.lock()
            .entry(map.to_owned())
            .or_default()
            .entry(outbox.conn())
            .or_insert_with(|| Subscriber {
                outbox: outbox.clone(),
                queries: HashMap::new(),
            })
            .queries
            .insert(query_id.to_owned(), sub);
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
    /// the change enters, updates or leaves. `origin`'s live queries take
    /// the change too (their state stays exact) but it is not sent: the
    /// writer has it already. Never waits. Returns the live queries that
    /// must be run again ([`Hub::refill`]).
    pub(crate) fn publish(&self, origin: ConnId, changes: &[Change]) -> Vec<Refill> {
        let mut maps = self.lock();
        let mut out = Outgo::default();
        for change in changes {
            let Some(subs) = maps.get_mut(&change.map_name) else {
                continue;
            };
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
            let write = Write::of(&change.record);
            for (&conn, sub) in subs.iter_mut() {
                if conn != origin {
                    out.entry(conn, &sub.outbox).events.push(event.clone());
                }
                for (query_id, query) in &mut sub.queries {
                    let (updates, refill) = query.apply(&change.key, &write);
                    let updates = if conn == origin { Vec::new() } else { updates };
                    let result = (updates, refill);
                    out.query(
                        conn,
                        &sub.outbox,
                        &change.map_name,
                        (query_id, query),
                        result,
                    );
                }
            }
        }
        out.flush()
    }

    /// Closes every subscribed connection with `reason` and forgets its
    /// subscriptions.
    pub(crate) fn close_subscribers(&self, reason: CloseReason) {
        let mut maps = self.lock();
        for subs in maps.values() {
            for sub in subs.values() {
                sub.outbox.kill(reason);
            }
        }
        maps.clear();
    }

    /// Turns the rows of every live query expired at `now_millis` into
    /// `QUERY_UPDATE`s (LEAVE, and what enters in their place). Returns the
    /// live queries that must be run again.
    pub(crate) fn expire(&self, now_millis: u64) -> Vec<Refill> {
        let mut maps = self.lock();
        let mut out = Outgo::default();
        for (map, subs) in maps.iter_mut() {
            for (&conn, sub) in subs.iter_mut() {
                for (query_id, query) in &mut sub.queries {
                    if query.next_expiry().is_some_and(|at| at <= now_millis) {
                        let result = query.expire(now_millis);
                        out.query(conn, &sub.outbox, map, (query_id, query), result);
                    }
                }
            }
        }
        out.flush()
    }

    /// The earliest TTL expiry of a row held by any live query.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.lock()
            .values()
            .flat_map(HashMap::values)
            .flat_map(|sub| sub.queries.values())
            .filter_map(Subscription::next_expiry)
            .min()
    }

    /// Replaces the state of the live query `refill` names (if it still
    /// exists) with `fresh` and sends the differences.
    pub(crate) fn refill(&self, refill: &Refill, fresh: Rows) {
        let mut maps = self.lock();
        let Some(sub) = maps
            .get_mut(&refill.map)
            .and_then(|subs| subs.get_mut(&refill.conn))
        else {
            return;
        };
        let Some(query) = sub.queries.get_mut(&refill.query_id) else {
            return;
        };
        for update in query.refill(fresh) {
            sub.outbox.send(Message::QueryUpdate(update));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Prepared;
    use topgun_core::wire::{ChangeType, Query, QuerySub};
    use topgun_core::Timestamp;
    use topgun_storage::MemoryStore;

    fn change(key: &str, value: Option<rmpv::Value>) -> Change {
        let ts = Timestamp::new(1, 0, "n");
        Change {
            map_name: "m".into(),
            key: key.into(),
            record: match value {
                Some(v) => WireRecord::new(v, ts),
                None => WireRecord::tombstone(ts),
            },
        }
    }

    async fn everything() -> Subscription {
        let sub = QuerySub {
            query_id: "q".into(),
            map_name: "m".into(),
            query: Query::new(),
            fields: None,
        };
        let prepared = Prepared::new(&sub, 100).unwrap();
        prepared.run(&MemoryStore::new(), 0).await.unwrap().1
    }

    #[tokio::test]
    async fn events_skip_the_origin_and_full_queues_kill() {
        let hub = Hub::default();
        let (a, mut a_rx, _) = Outbox::new(1, 4);
        let (b, mut b_rx, b_kill) = Outbox::new(2, 2);
        hub.subscribe(&a, "m", "q", everything().await);
        hub.subscribe(&b, "m", "q", everything().await);
        hub.publish(1, &[change("k", Some(1.into()))]);
        assert!(a_rx.try_recv().is_err());
        assert!(matches!(b_rx.try_recv(), Ok(Outgoing::Events(e)) if e[0].key == "k"));
        let Ok(Outgoing::Updates(updates)) = b_rx.try_recv() else {
            panic!("expected query updates")
        };
        assert_eq!(updates[0].change_type, ChangeType::Enter);
        // A commit takes one slot for its events and one for its updates,
        // however many changes it has: two commits overflow b's queue of 2.
        hub.publish(1, &[change("k2", Some(1.into())), change("k3", None)]);
        assert_eq!(*b_kill.borrow(), None);
        hub.publish(1, &[change("k4", Some(1.into()))]);
        assert_eq!(*b_kill.borrow(), Some(CloseReason::SlowConsumer));
        hub.unsubscribe(2, "m", "q");
        assert_eq!(hub.subscribers("m"), 1);
        hub.remove_connection(1);
        assert_eq!(hub.subscribers("m"), 0);
    }
}
