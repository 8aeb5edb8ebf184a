//! Server benchmark (`cargo xtask bench server`): acknowledged writes.
//!
//! A server on 127.0.0.1 (port 0) with a durable redb data dir; raw
//! protocol clients each send one-op `OP_BATCH`es and wait for each
//! `OP_ACK` before the next (the slowest way to push: one durable commit
//! round trip per op, unless the server groups commits of concurrent
//! connections). Measured with 1 and 8 connections, beside the same-run
//! baseline of raw redb doing one durable commit per op on one thread.
//!
//! Then one connection pushing as fast as the protocol allows (batches of
//! 100 ops, 16 unacknowledged), at the default op rate: with flow control
//! instead of `ERROR 429`, every batch must be acknowledged and none
//! refused (`push_one_connection_errors` must be 0).
//!
//! Prints a table and writes `target/bench/server.json`.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{batch, now_millis, put, ts, TestServer};
use redb::{Database, Durability, TableDefinition};
use std::path::PathBuf;
use std::time::Instant;
use topgun_core::wire::Message;
use topgun_core::Timestamp;
use topgun_server::{ServerConfig, StoreConfig};

/// Batches per connection.
const PER_CONNECTION: u64 = 300;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("bench");

/// Raw redb: `ops` durable commits of one small insert each; ops/s.
fn raw_redb(dir: &std::path::Path, ops: u64) -> f64 {
    let db = Database::create(dir.join("raw.redb")).unwrap();
    let value = [0xA5u8; 16];
    let start = Instant::now();
    for i in 0..ops {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        tx.open_table(RECORDS)
            .unwrap()
            .insert(format!("k{i}").as_str(), value.as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// `connections` clients pushing one-op batches concurrently; acked ops/s.
async fn acked(server: &TestServer, connections: u64) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(server.connect().await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            tokio::spawn(async move {
                for i in 0..PER_CONNECTION {
                    let key = format!("c{connections}-{c}-k{i}");
                    let node = format!("n{c}");
                    client
                        .write(vec![put(i.to_string(), "bench", &key, i, ts(i, &node))])
                        .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (connections * PER_CONNECTION) as f64 / start.elapsed().as_secs_f64()
}

/// Batches of the pipelined push.
const PUSH_BATCHES: u64 = 1_000;
/// Ops per batch of the pipelined push.
const PUSH_BATCH: u64 = 100;
/// Batches sent and not yet acknowledged, at most.
const PUSH_IN_FLIGHT: u64 = 16;

/// One connection pushing `PUSH_BATCHES` batches with `PUSH_IN_FLIGHT`
/// unacknowledged; acked ops/s and the errors received.
async fn pipelined(server: &TestServer) -> (f64, u64) {
    let mut client = server.connect().await;
    // Stamped now: the server refuses timestamps beyond its drift bound.
    let make = |b: u64| {
        let now = Timestamp::new(now_millis(), 0, "p");
        let ops = (0..PUSH_BATCH)
            .map(|i| {
                let n = b * PUSH_BATCH + i;
                put(n.to_string(), "push", &format!("k{n}"), n, now.clone())
            })
            .collect();
        batch(ops)
    };
    let start = Instant::now();
    let mut sent = 0;
    let mut acked = 0;
    let mut errors = 0;
    while sent < PUSH_IN_FLIGHT.min(PUSH_BATCHES) {
        client.send(&make(sent)).await;
        sent += 1;
    }
    while acked < PUSH_BATCHES {
        match client.recv().await {
            Message::OpAck(_) => {
                acked += 1;
                if sent < PUSH_BATCHES {
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
    let ops = (acked * PUSH_BATCH) as f64;
    (ops / start.elapsed().as_secs_f64(), errors)
}

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("bench")
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = raw_redb(dir.path(), PER_CONNECTION);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (one, eight, (push, push_errors)) = runtime.block_on(async {
        let server = TestServer::start(ServerConfig::new(StoreConfig::DataDir(
            dir.path().join("server"),
        )))
        .await;
        let one = acked(&server, 1).await;
        let eight = acked(&server, 8).await;
        let push = pipelined(&server).await;
        server.stop().await.unwrap();
        (one, eight, push)
    });
    eprintln!("{:<48} {:>12}", "acked one-op batches (durable)", "ops/s");
    eprintln!(
        "{:<48} {:>12.0}",
        "raw redb, one durable commit per op", baseline
    );
    eprintln!(
        "{:<48} {:>12.0} ({:.2}x raw)",
        "server, 1 connection",
        one,
        one / baseline
    );
    eprintln!(
        "{:<48} {:>12.0} ({:.2}x raw)",
        "server, 8 connections",
        eight,
        eight / baseline
    );
    eprintln!(
        "{:<48} {:>12.0} ({} errors, goal 0)",
        "push, 1 connection, 100-op batches, 16 in flight", push, push_errors
    );
    let json = format!(
        concat!(
            "{{\n  \"ops_per_connection\": {},\n  \"raw_redb_ops_per_s\": {:.0},\n",
            "  \"one_connection_ops_per_s\": {:.0},\n  \"eight_connections_ops_per_s\": {:.0},\n",
            "  \"push_one_connection_ops_per_s\": {:.0},\n",
            "  \"push_one_connection_errors\": {}\n}}\n"
        ),
        PER_CONNECTION, baseline, one, eight, push, push_errors
    );
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("server.json"), json).unwrap();
    eprintln!("wrote {}", out.join("server.json").display());
}
