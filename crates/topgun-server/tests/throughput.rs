//! Rough write throughput against a redb data dir (durable acks). Not run
//! by default: `cargo test -p topgun-server --release --test throughput --
//! --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use common::*;
use std::time::Instant;
use topgun_server::{ServerConfig, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn durable_batches_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(ServerConfig::new(StoreConfig::DataDir(
        dir.path().to_owned(),
    )))
    .await;
    for clients in [1usize, 8] {
        let per_client = 200u64;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut client = server.connect().await;
            tasks.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let key = format!("c{c}-k{i}");
                    client
                        .write(vec![put(
                            i.to_string(),
                            "bench",
                            &key,
                            i,
                            ts(i, &format!("n{c}")),
                        )])
                        .await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let total = clients as u64 * per_client;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{clients} client(s): {total} one-op batches acked in {secs:.2} s = {:.0} batches/s",
            total as f64 / secs
        );
    }
    server.stop().await.unwrap();
}
