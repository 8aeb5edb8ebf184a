//! Test harness: a server on 127.0.0.1 port 0 and a raw-protocol client
//! speaking `topgun_core::wire` frames over tokio-tungstenite.
// Helpers panic on failure, like the tests that call them; not every test
// binary uses every helper.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use topgun_core::wire::{self, ClientOp, Message, OpBatch, OpId, OpType, WireRecord};
use topgun_core::Timestamp;
use topgun_server::{ServerConfig, ServerError, StoreConfig};
use topgun_storage::{MemoryStore, Store};

pub mod pg;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(topgun_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A server with auth disabled on a fresh in-memory store.
    pub async fn memory() -> (Self, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let config = ServerConfig::new(StoreConfig::Store(store.clone() as Arc<dyn Store>));
        (Self::start(config).await, store)
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.signal_stop();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic")
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the next read brought.
#[derive(Debug)]
pub enum Received {
    Msg(Message),
    Closed(Option<CloseFrame>),
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Self { ws }
    }

    pub async fn send(&mut self, msg: &Message) {
        self.send_raw(wire::encode(msg).unwrap()).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Ws::Binary(bytes.into())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Ws::Text(text.into())).await.unwrap();
    }

    /// The next message or close, within `WAIT`.
    pub async fn next(&mut self) -> Received {
        self.next_within(WAIT)
            .await
            .expect("a frame within the timeout")
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Ws::Binary(bytes))) => {
                    return Some(Received::Msg(wire::decode(&bytes).unwrap()))
                }
                Some(Ok(Ws::Close(frame))) => return Some(Received::Closed(frame)),
                Some(Ok(Ws::Text(t))) => panic!("unexpected text frame {t}"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Received::Closed(None)),
            }
        }
    }

    /// The next message; panics on a close.
    pub async fn recv(&mut self) -> Message {
        match self.next().await {
            Received::Msg(msg) => msg,
            Received::Closed(frame) => panic!("connection closed: {frame:?}"),
        }
    }

    /// Messages until one matches `pred`, which is returned; others are
    /// dropped.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Message) -> bool) -> Message {
        loop {
            let msg = self.recv().await;
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// Asserts nothing arrives for `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        if let Some(got) = self.next_within(Duration::from_millis(ms)).await {
            panic!("expected silence, got {got:?}");
        }
    }

    /// Asserts no `SERVER_EVENT`/`SERVER_BATCH_EVENT` arrives for `ms`
    /// (other frames are ignored).
    pub async fn expect_no_event(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                None => return,
                Some(Received::Msg(
                    m @ (Message::ServerEvent(_) | Message::ServerBatchEvent(_)),
                )) => {
                    panic!("unexpected event {m:?}")
                }
                Some(_) => {}
            }
        }
    }

    /// Sends a PING and waits for its PONG: every earlier frame has then
    /// been handled.
    pub async fn roundtrip(&mut self) {
        let stamp = 4242;
        self.send(&Message::Ping(wire::Ping { timestamp: stamp }))
            .await;
        self.recv_until(|m| matches!(m, Message::Pong(p) if p.timestamp == stamp))
            .await;
    }

    pub async fn subscribe(&mut self, query_id: &str, map: &str) -> wire::QueryResp {
        self.send(&Message::QuerySub(wire::QuerySub {
            query_id: query_id.into(),
            map_name: map.into(),
            query: wire::Query::default(),
            fields: None,
        }))
        .await;
        match self
            .recv_until(|m| matches!(m, Message::QueryResp(_)))
            .await
        {
            Message::QueryResp(resp) => resp,
            _ => unreachable!(),
        }
    }

    /// Sends a batch and returns the ack's `lastId` (other frames dropped).
    pub async fn write(&mut self, ops: Vec<ClientOp>) -> OpId {
        self.send(&batch(ops)).await;
        match self.recv_until(|m| matches!(m, Message::OpAck(_))).await {
            Message::OpAck(ack) => ack.last_id,
            _ => unreachable!(),
        }
    }
}

/// A wall-clock-near timestamp `offset` ms after a fixed base.
pub fn ts(offset: u64, node: &str) -> Timestamp {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Timestamp::new(
        *BASE.get_or_init(|| now_millis() - 10_000) + offset,
        0,
        node,
    )
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn put(
    id: impl Into<OpId>,
    map: &str,
    key: &str,
    value: impl Into<rmpv::Value>,
    timestamp: Timestamp,
) -> ClientOp {
    ClientOp {
        id: Some(id.into()),
        map_name: map.into(),
        key: key.into(),
        op_type: Some(OpType::Put),
        record: Some(WireRecord::new(value.into(), timestamp)),
        write_concern: None,
        timeout: None,
    }
}

pub fn remove(id: impl Into<OpId>, map: &str, key: &str, timestamp: Timestamp) -> ClientOp {
    ClientOp {
        id: Some(id.into()),
        map_name: map.into(),
        key: key.into(),
        op_type: Some(OpType::Remove),
        record: Some(WireRecord::tombstone(timestamp)),
        write_concern: None,
        timeout: None,
    }
}

pub fn batch(ops: Vec<ClientOp>) -> Message {
    Message::OpBatch(OpBatch {
        ops,
        write_concern: None,
        timeout: None,
    })
}

pub fn error_code(msg: &Message) -> Option<u32> {
    match msg {
        Message::Error(e) => Some(e.code),
        _ => None,
    }
}
