//! The driver loop, step by step: a scripted runtime (connections are
//! channels the test answers), a `MemoryStore` replica, tokio's paused
//! clock. No sockets, no wall-clock waits.

use super::*;
use crate::runtime::{BoxFuture, Connection, Frame, Runtime};
use crate::{Applied, ConnectionState, ReplicaError};
use tokio::sync::{mpsc, oneshot};
use topgun_core::wire::{Message, WireRecord};
use topgun_core::{Hlc, HlcError, Timestamp};
use topgun_storage::{LocalWrite, MemoryStore, OpType, Store, StoreRecord};

type ConnectReply = oneshot::Sender<Result<Box<dyn Connection>, String>>;

/// Connection attempts go to the test, which answers them.
#[derive(Debug)]
struct ScriptedRuntime {
    attempts: mpsc::UnboundedSender<ConnectReply>,
    origin: tokio::time::Instant,
}

impl Runtime for ScriptedRuntime {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }

    fn connect(
        &self,
        _url: &str,
        _max_frame_len: usize,
    ) -> BoxFuture<'static, Result<Box<dyn Connection>, String>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.attempts.send(tx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("attempt dropped".into())) })
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(tokio::spawn(task));
    }
}

/// The test's end of a connection.
struct Peer {
    sent: mpsc::UnboundedReceiver<Vec<u8>>,
    frames: mpsc::UnboundedSender<Frame>,
    closed: oneshot::Receiver<String>,
}

struct ChannelConnection {
    sent: mpsc::UnboundedSender<Vec<u8>>,
    frames: mpsc::UnboundedReceiver<Frame>,
    closed: oneshot::Sender<String>,
}

fn connection() -> (Box<dyn Connection>, Peer) {
    let (sent_tx, sent_rx) = mpsc::unbounded_channel();
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = oneshot::channel();
    (
        Box::new(ChannelConnection {
            sent: sent_tx,
            frames: frames_rx,
            closed: closed_tx,
        }),
        Peer {
            sent: sent_rx,
            frames: frames_tx,
            closed: closed_rx,
        },
    )
}

impl Connection for ChannelConnection {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        let result = self.sent.send(frame).map_err(|_| "peer gone".to_owned());
        Box::pin(async move { result })
    }

    fn recv(&mut self) -> BoxFuture<'_, Frame> {
        Box::pin(async move {
            self.frames
                .recv()
                .await
                .unwrap_or_else(|| Frame::Closed("peer gone".into()))
        })
    }

    fn close(self: Box<Self>, reason: String) -> BoxFuture<'static, ()> {
        let _ = self.closed.send(reason);
        Box::pin(async {})
    }
}

impl Peer {
    /// Sends `msg` to the driver as the server would.
    fn send(&self, msg: &Message) {
        self.frames
            .send(Frame::Binary(Codec::default().encode(msg).unwrap()))
            .unwrap();
    }

    async fn next_message(&mut self) -> Message {
        let bytes = self.sent.recv().await.expect("a frame");
        Codec::default().decode(&bytes).expect("decodes")
    }

    /// Skips frames until one matches.
    async fn expect(&mut self, want: impl Fn(&Message) -> bool) -> Message {
        loop {
            let msg = self.next_message().await;
            if want(&msg) {
                return msg;
            }
        }
    }
}

#[derive(Debug)]
struct MemoryReplica {
    store: MemoryStore,
    hlc: Hlc,
}

#[async_trait::async_trait]
impl Replica for MemoryReplica {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn node_id(&self) -> &str {
        self.hlc.node_id()
    }

    fn wall_ms(&self) -> u64 {
        0
    }

    async fn apply_remote(
        &self,
        map: &str,
        records: Vec<(String, WireRecord)>,
    ) -> Result<Applied, ReplicaError> {
        let batch = records
            .into_iter()
            .map(|(key, r)| StoreRecord {
                map_name: map.to_owned(),
                key,
                value: r.value.map(|v| {
                    let mut buf = Vec::new();
                    rmpv::encode::write_value(&mut buf, &v).expect("to a Vec");
                    buf
                }),
                timestamp: r.timestamp,
                ttl_ms: r.ttl_ms,
                dirty: false,
            })
            .collect();
        self.store.apply_remote(batch).await?;
        Ok(Applied::default())
    }

    async fn drop_clean(&self, map: &str, keys: &[String]) -> Result<(), ReplicaError> {
        self.store
            .prune_clean(map, keys, topgun_storage::PruneSums::Drop)
            .await?;
        Ok(())
    }

    fn observe_timestamp(&self, timestamp: &Timestamp) -> Result<(), HlcError> {
        self.hlc.update(timestamp).map(|_| ())
    }
}

struct Harness {
    handle: SyncHandle,
    attempts: mpsc::UnboundedReceiver<ConnectReply>,
    status: Arc<SyncStatus>,
    replica: Arc<MemoryReplica>,
}

fn start(store: MemoryStore) -> Harness {
    let replica = Arc::new(MemoryReplica {
        store,
        hlc: Hlc::new("client-1").expect("node id"),
    });
    let (handle, attempts, status) = spawn_on(replica.clone());
    Harness {
        handle,
        attempts,
        status,
        replica,
    }
}

/// A driver on `replica`, syncing map "m" over a scripted runtime.
fn spawn_on(
    replica: Arc<dyn Replica>,
) -> (
    SyncHandle,
    mpsc::UnboundedReceiver<ConnectReply>,
    Arc<SyncStatus>,
) {
    let (tx, attempts) = mpsc::unbounded_channel();
    let runtime = Arc::new(ScriptedRuntime {
        attempts: tx,
        origin: tokio::time::Instant::now(),
    });
    let status = Arc::new(SyncStatus::new());
    let settings = DriverSettings {
        url: "ws://scripted".into(),
        token_provider: None,
        token: None,
        config: SyncConfig {
            auth_grace_ms: 50,
            ..SyncConfig::default()
        },
        maps: vec!["m".into()],
    };
    let handle = SyncDriver::spawn(runtime, replica, status.clone(), settings);
    (handle, attempts, status)
}

impl Harness {
    /// Answers the next connection attempt with a connection.
    async fn accept(&mut self) -> Peer {
        let reply = self.attempts.recv().await.expect("an attempt");
        let (conn, peer) = connection();
        assert!(reply.send(Ok(conn)).is_ok(), "the driver waits for it");
        peer
    }

    /// Accepts the next attempt and waits until the driver uses the
    /// connection (its first frame).
    async fn connected(&mut self) -> Peer {
        let mut peer = self.accept().await;
        peer.next_message().await;
        peer
    }
}

#[tokio::test(start_paused = true)]
async fn close_is_served_while_a_connection_attempt_hangs() {
    let mut h = start(MemoryStore::new());
    let hanging = h.attempts.recv().await.expect("an attempt");
    assert_eq!(h.status.state(), ConnectionState::Connecting);
    // Commands are served meanwhile: the map is opened at once.
    h.handle.open_map("other");
    // Close returns without the attempt ever being answered, and the
    // attempt is abandoned.
    h.handle.close().await;
    assert!(h.handle.is_stopped());
    assert!(hanging.is_closed());
    assert_eq!(h.status.state(), ConnectionState::Offline);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_driver() {
    let mut h = start(MemoryStore::new());
    let mut peer = h.connected().await;
    let watcher = h.handle.clone();
    let notifier = h.handle.notifier();
    drop(h.handle);
    assert!(!watcher.is_stopped(), "one handle is left");
    drop(watcher);
    // A notifier alone does not keep it running: the connection closes.
    let reason = (&mut peer.closed).await.expect("closed by the driver");
    assert!(reason.contains("stopped"), "{reason}");
    notifier.local_change("m");
}

#[tokio::test(start_paused = true)]
async fn network_offline_disconnects_and_online_reconnects_at_once() {
    let mut h = start(MemoryStore::new());
    let peer = h.connected().await;
    h.handle.set_network(false);
    let reason = peer.closed.await.expect("closed");
    assert!(reason.contains("offline"), "{reason}");
    // No attempt while offline, however long it stays so.
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    assert!(h.attempts.try_recv().is_err());
    h.handle.set_network(true);
    let started = tokio::time::Instant::now();
    let _peer = h.accept().await;
    assert_eq!(started.elapsed(), std::time::Duration::ZERO, "no backoff");
    h.handle.close().await;
}

#[tokio::test(start_paused = true)]
async fn an_unsendable_op_is_reported_and_the_others_still_go() {
    let store = MemoryStore::new();
    let write = |key: &str, value: Vec<u8>, millis: u64| LocalWrite {
        map_name: "m".into(),
        key: key.into(),
        op_type: OpType::Put,
        value: Some(value),
        timestamp: Timestamp::new(millis, 0, "client-1"),
        ttl_ms: None,
    };
    // 0xc1 is not MessagePack: sending it as nil would erase the key
    // everywhere.
    let bad = store
        .write_local(write("bad", vec![0xc1], 1))
        .await
        .unwrap();
    store
        .write_local(write("good", vec![0x2a], 2))
        .await
        .unwrap();
    let mut h = start(store);
    let mut events = h.status.events();
    let mut peer = h.accept().await;
    let batch = peer.expect(|m| matches!(m, Message::OpBatch(_))).await;
    let Message::OpBatch(batch) = batch else {
        unreachable!()
    };
    let keys: Vec<&str> = batch.ops.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["good"]);
    loop {
        match events.recv().await.expect("events") {
            SyncEvent::LocalError(why) => {
                assert!(why.contains(&format!("op {bad}")), "{why}");
                break;
            }
            _ => continue,
        }
    }
    // It stays in the log, unsent.
    let pending = h.replica.store.pending_ops(None, 10).await.unwrap();
    assert!(pending.iter().any(|o| o.id == bad));
    drop(peer.frames);
    h.handle.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_local_change_is_pushed_and_its_ack_marks_it_synced() {
    let store = MemoryStore::new();
    let mut h = start(store);
    let mut peer = h.accept().await;
    // Synced once the pull of "m" (empty on both sides) completes.
    let root = peer.expect(|m| matches!(m, Message::SyncInit(_))).await;
    assert!(matches!(root, Message::SyncInit(_)));
    let ts = Timestamp::new(5, 0, "client-1");
    let id = h
        .replica
        .store
        .write_local(LocalWrite {
            map_name: "m".into(),
            key: "k".into(),
            op_type: OpType::Remove,
            value: None,
            timestamp: ts.clone(),
            ttl_ms: None,
        })
        .await
        .unwrap();
    h.handle.notifier().local_change("m");
    let Message::OpBatch(batch) = peer.expect(|m| matches!(m, Message::OpBatch(_))).await else {
        unreachable!()
    };
    assert_eq!(batch.ops.len(), 1);
    let ack = topgun_core::wire::OpAck {
        last_id: topgun_core::wire::OpId::Text(id.to_string()),
        achieved_level: None,
        results: None,
    };
    peer.send(&Message::OpAck(ack));
    // On the paused clock: each step lets the driver run to idle.
    while h.replica.store.stats().await.unwrap().pending_ops > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    h.handle.close().await;
}

/// A replica whose merges wait until the test lets each one through.
#[derive(Debug)]
struct GatedReplica {
    inner: MemoryReplica,
    gate: tokio::sync::Semaphore,
    started: tokio::sync::Notify,
    /// Merges (counted from 1, in the order they pass the gate) that fail.
    failing: BTreeSet<usize>,
    passed: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Replica for GatedReplica {
    fn store(&self) -> &dyn Store {
        self.inner.store()
    }

    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    fn wall_ms(&self) -> u64 {
        0
    }

    async fn apply_remote(
        &self,
        map: &str,
        records: Vec<(String, WireRecord)>,
    ) -> Result<Applied, ReplicaError> {
        self.started.notify_one();
        self.gate.acquire().await.expect("open").forget();
        let n = self
            .passed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if self.failing.contains(&n) {
            return Err(format!("merge {n} fails").into());
        }
        self.inner.apply_remote(map, records).await
    }

    async fn drop_clean(&self, map: &str, keys: &[String]) -> Result<(), ReplicaError> {
        self.inner.drop_clean(map, keys).await
    }

    fn observe_timestamp(&self, timestamp: &Timestamp) -> Result<(), HlcError> {
        self.inner.observe_timestamp(timestamp)
    }
}

impl GatedReplica {
    /// A replica whose merges numbered in `failing` fail.
    fn new(failing: &[usize]) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryReplica {
                store: MemoryStore::new(),
                hlc: Hlc::new("client-1").expect("node id"),
            },
            gate: tokio::sync::Semaphore::new(0),
            started: tokio::sync::Notify::new(),
            failing: failing.iter().copied().collect(),
            passed: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

/// A driver over `replica`, connected, its pull of map `m` begun: the
/// server's root answer (hash 7) is sent.
async fn pulling(replica: Arc<GatedReplica>) -> (SyncHandle, Peer, Arc<SyncStatus>) {
    let (handle, mut attempts, status) = spawn_on(replica);
    let reply = attempts.recv().await.expect("an attempt");
    let (conn, mut peer) = connection();
    assert!(reply.send(Ok(conn)).is_ok());
    peer.expect(|m| matches!(m, Message::SyncInit(_))).await;
    peer.send(&Message::SyncRespRoot(topgun_core::wire::SyncRespRoot {
        map_name: "m".into(),
        root_hash: 7,
        timestamp: Timestamp::new(1, 0, "server"),
    }));
    (handle, peer, status)
}

/// The server's answer for inner node `path` of map `m`: `children`.
fn buckets_answer(path: &str, children: &[&str]) -> Message {
    Message::SyncRespBuckets(topgun_core::wire::SyncRespBuckets {
        map_name: "m".into(),
        path: path.into(),
        buckets: children.iter().map(|c| ((*c).to_owned(), 7)).collect(),
    })
}

/// The server's answer for leaf `path` of map `m`: one record, `key`.
fn leaf_answer(path: &str, key: &str) -> Message {
    Message::SyncRespLeaf(topgun_core::wire::SyncRespLeaf {
        map_name: "m".into(),
        path: path.into(),
        records: vec![topgun_core::wire::LeafRecord {
            key: key.into(),
            record: WireRecord::new(rmpv::Value::from(1), Timestamp::new(1, 0, "server")),
        }],
    })
}

/// A request for the node at `path`.
fn request(path: &'static str) -> impl Fn(&Message) -> bool {
    move |m| matches!(m, Message::MerkleReqBucket(r) if r.path == path)
}

/// While a pulled leaf is being stored, the loop reads on: the next
/// bucket answer is answered with its request at once, and the next
/// leaf's merge starts beside the first. The pull completes
/// (the state goes online) only once every merge is stored.
#[tokio::test(start_paused = true)]
async fn frames_are_answered_while_a_merge_is_written_and_the_pull_ends_after_it() {
    let replica = GatedReplica::new(&[]);
    let (handle, mut peer, status) = pulling(replica.clone()).await;
    peer.expect(request("")).await;
    peer.send(&buckets_answer("", &["0", "1"]));
    peer.expect(request("0")).await;
    peer.send(&buckets_answer("0", &["0"]));
    peer.expect(request("00")).await;
    peer.send(&buckets_answer("00", &["0"]));
    peer.expect(request("000")).await;
    peer.send(&leaf_answer("000", "a"));
    replica.started.notified().await;
    // The first merge waits at the gate; the loop still answers.
    peer.send(&buckets_answer("1", &["0"]));
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        peer.expect(request("10")),
    )
    .await
    .expect("answered while the merge waits");
    peer.send(&buckets_answer("10", &["0"]));
    peer.expect(request("100")).await;
    peer.send(&leaf_answer("100", "b"));
    // The next merge starts while the first still waits: two in flight.
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        replica.started.notified(),
    )
    .await
    .expect("a second merge started while the first waits");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(status.state(), ConnectionState::Syncing, "merges pending");
    assert!(replica.inner.store.get("m", "a").await.unwrap().is_none());
    replica.gate.add_permits(2);
    while status.state() != ConnectionState::Online {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for key in ["a", "b"] {
        assert!(
            replica.inner.store.get("m", key).await.unwrap().is_some(),
            "{key}"
        );
    }
    drop(peer.frames);
    handle.close().await;
}

/// Stopping with two merges in flight, the first of which fails: the
/// second is still carried out to its end (its records stored, so its
/// changes reach the cache and subscribers), not dropped with the loop.
#[tokio::test(start_paused = true)]
async fn a_merge_in_flight_behind_a_failed_one_still_lands_when_sync_stops() {
    let replica = GatedReplica::new(&[1]);
    let (handle, mut peer, _status) = pulling(replica.clone()).await;
    peer.expect(request("")).await;
    peer.send(&buckets_answer("", &["0"]));
    peer.send(&leaf_answer("000", "a"));
    replica.started.notified().await;
    peer.send(&leaf_answer("001", "b"));
    replica.started.notified().await;
    // Both merges wait at the gate; sync stops, the first merge passes
    // and fails, and only then the second passes: it must still be stored.
    let closing = tokio::spawn(async move { handle.close().await });
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    replica.gate.add_permits(1);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    replica.gate.add_permits(1);
    closing.await.expect("closed");
    assert!(replica.inner.store.get("m", "a").await.unwrap().is_none());
    assert!(
        replica.inner.store.get("m", "b").await.unwrap().is_some(),
        "the merge behind the failed one was dropped"
    );
}
