//! Graceful shutdown: a batch in flight when the signal comes is applied
//! and acknowledged before the close frame.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use topgun_core::wire::{Message, OpId};
use topgun_server::{ServerConfig, StoreConfig};
use topgun_storage::hooked::{HookedStore, Phase, StoreCall};
use topgun_storage::{MemoryStore, Store};

/// A `MemoryStore` whose `apply_remote` reports that it started and then
/// takes 300 ms.
fn slow_store(started: mpsc::UnboundedSender<()>) -> Arc<HookedStore<MemoryStore>> {
    Arc::new(HookedStore::new(
        MemoryStore::new(),
        Arc::new(move |call, phase| {
            let started = started.clone();
            Box::pin(async move {
                if call == StoreCall::ApplyRemote && phase == Phase::Before {
                    let _ = started.send(());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        }),
    ))
}

#[tokio::test]
async fn graceful_shutdown_acks_an_in_flight_batch_then_closes() {
    let (started, mut applying) = mpsc::unbounded_channel();
    let store = slow_store(started);
    let mut server = TestServer::start(ServerConfig::new(StoreConfig::Store(
        store.clone() as Arc<dyn Store>
    )))
    .await;
    let mut c = server.connect().await;
    c.send(&batch(vec![put("in-flight", "m", "k", 1, ts(1, "c"))]))
        .await;
    applying.recv().await.unwrap();
    server.signal_stop();
    match c.recv().await {
        Message::OpAck(ack) => assert_eq!(ack.last_id, OpId::from("in-flight")),
        other => panic!("{other:?}"),
    }
    match c.next().await {
        Received::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "server shutting down");
        }
        other => panic!("{other:?}"),
    }
    let addr = server.addr;
    server.stop().await.unwrap();
    assert!(store.get("m", "k").await.unwrap().is_some());
    // The listener is closed.
    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_err());
}
