//! What the server benches share: pushing batches over raw protocol
//! connections, and where figures are written.
// Each bench uses a part of it.
#![allow(dead_code, unreachable_pub)]

use super::common::{self, batch, now_millis, put};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;
use topgun_core::wire::Message;
use topgun_core::Timestamp;

/// Ops per batch of the pipelined push.
pub const PUSH_BATCH: u64 = 100;
/// Batches sent and not yet acknowledged, at most.
const PUSH_IN_FLIGHT: u64 = 16;

/// One connection pushing `batches` batches with `PUSH_IN_FLIGHT`
/// unacknowledged, its keys prefixed `prefix`; (acked ops, errors).
async fn push_connection(mut client: common::Client, prefix: String, batches: u64) -> (u64, u64) {
    // Stamped now: the server refuses timestamps beyond its drift bound.
    let make = |b: u64| {
        let now = Timestamp::new(now_millis(), 0, "p");
        let ops = (0..PUSH_BATCH)
            .map(|i| {
                let n = b * PUSH_BATCH + i;
                put(
                    n.to_string(),
                    "push",
                    &format!("{prefix}k{n}"),
                    n,
                    now.clone(),
                )
            })
            .collect();
        batch(ops)
    };
    let mut sent = 0;
    let mut acked = 0;
    let mut errors = 0;
    while sent < PUSH_IN_FLIGHT.min(batches) {
        client.send(&make(sent)).await;
        sent += 1;
    }
    while acked < batches {
        match client.recv().await {
            Message::OpAck(_) => {
                acked += 1;
                if sent < batches {
                    client.send(&make(sent)).await;
                    sent += 1;
                }
            }
            Message::Error(_) => errors += 1,
            _ => {}
        }
        if errors > 0 {
            // A refused batch is never acknowledged: stop counting.
            break;
        }
    }
    (acked * PUSH_BATCH, errors)
}

/// `connections` connections pushing `batches` batches each at `addr`;
/// (acked ops/s, errors).
pub async fn push(addr: SocketAddr, connections: u64, batches: u64) -> (f64, u64) {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(common::Client::connect(addr).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| tokio::spawn(push_connection(client, format!("c{c}-"), batches)))
        .collect();
    let (mut ops, mut errors) = (0, 0);
    for task in tasks {
        let (o, e) = task.await.unwrap();
        ops += o;
        errors += e;
    }
    (ops as f64 / start.elapsed().as_secs_f64(), errors)
}

/// `target/bench` (or `$CARGO_TARGET_DIR/bench`).
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("bench")
}
