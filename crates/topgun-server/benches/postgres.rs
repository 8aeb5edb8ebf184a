//! PostgreSQL benchmark (`cargo xtask bench postgres`): server nodes on a
//! local PostgreSQL with durable commits (`synchronous_commit = on`).
//!
//! 1. **Push through one node**: 100,000 ops from 8 raw protocol
//!    connections (batches of 100, 16 unacknowledged each), beside
//!    PostgreSQL's own floor in the same run: the same rows written by a
//!    plain multi-row `INSERT … ON CONFLICT` of 100 rows per statement
//!    (one commit each), from 8 concurrent connections and from one. Three
//!    alternating rounds of the node and the 8-connection floor, each on a
//!    fresh database; medians. Goal: the node at >= 0.7x the floor.
//! 2. **Fan-out across nodes**: 200 connections spread over the nodes,
//!    each writing batches of 10 ops and waiting for each ack; two
//!    subscribers per node measure, for every write made on another node
//!    (on the only node, with one node), the delay from the write being
//!    sent to its `SERVER_EVENT`: total acked ops/s and p50 / p99 delivery
//!    latency, with 1 node and with 3 nodes. The nodes run in this
//!    process, sharing its runtime.
//!
//! Needs `TOPGUN_TEST_POSTGRES` (the admin URL of a server to create
//! databases on; `cargo xtask bench` starts a throwaway one). Prints a
//! table and writes `target/bench/postgres.json`.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{batch, now_millis, pg, put, TestServer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{out_dir, push, PUSH_BATCH};
use tokio::sync::Mutex;
use topgun_core::wire::{Message, ServerEvent};
use topgun_core::Timestamp;
use topgun_server::store::{PostgresOptions, PostgresStore, ServerStore};
use topgun_server::{ServerConfig, StoreConfig};

/// Alternating rounds of the push and its floor.
const ROUNDS: usize = 3;
/// Ops of the push.
const PUSH_OPS: u64 = 100_000;
/// Connections of the push and of the 8-connection floor.
const PUSH_CONNECTIONS: u64 = 8;
/// Writer connections of the fan-out, over all nodes.
const WRITERS: usize = 200;
/// Subscribers per node.
const SUBSCRIBERS: usize = 2;
/// Batches per writer, and ops per batch.
const WRITER_BATCHES: u64 = 10;
const WRITER_BATCH: u64 = 10;

/// `connections` loops of 100-row `INSERT … ON CONFLICT` statements
/// writing `PUSH_OPS` rows to `topgun_records`; rows/s.
async fn floor(url: &str, connections: u64) -> f64 {
    let per = PUSH_OPS / connections;
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let client = pg::connect(&url).await;
                let insert = client
                    .prepare(
                        "INSERT INTO topgun_records
                             (map_name, key, value, millis, counter, node_id, ttl_ms)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[],
                                              $4::int8[], $5::int8[], $6::text[], $7::int8[])
                         ON CONFLICT (map_name, key) DO UPDATE SET
                             value = excluded.value, millis = excluded.millis,
                             counter = excluded.counter, node_id = excluded.node_id,
                             ttl_ms = excluded.ttl_ms",
                    )
                    .await
                    .unwrap();
                for b in 0..per / PUSH_BATCH {
                    let rows = 0..PUSH_BATCH;
                    let maps: Vec<&str> = rows.clone().map(|_| "push").collect();
                    let keys: Vec<String> = rows
                        .clone()
                        .map(|i| format!("c{c}-k{}", b * PUSH_BATCH + i))
                        .collect();
                    let values: Vec<Vec<u8>> = rows
                        .clone()
                        .map(|i| {
                            let mut v = Vec::new();
                            rmpv::encode::write_value(&mut v, &rmpv::Value::from(i)).unwrap();
                            v
                        })
                        .collect();
                    let millis: Vec<i64> = rows.clone().map(|_| now_millis() as i64).collect();
                    let counters: Vec<i64> = rows.clone().map(|_| 0).collect();
                    let nodes: Vec<&str> = rows.clone().map(|_| "p").collect();
                    let ttls: Vec<Option<i64>> = rows.map(|_| None).collect();
                    client
                        .execute(
                            &insert,
                            &[&maps, &keys, &values, &millis, &counters, &nodes, &ttls],
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per / PUSH_BATCH * PUSH_BATCH * connections) as f64 / start.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A fresh database with the server's schema.
async fn database(name: &str) -> String {
    let url = pg::fresh_database(name).await.unwrap();
    let store = PostgresStore::connect(PostgresOptions::new(&url))
        .await
        .unwrap();
    store.close().await.unwrap();
    url
}

async fn node(url: &str) -> TestServer {
    TestServer::start(ServerConfig::new(StoreConfig::Postgres(
        PostgresOptions::new(url),
    )))
    .await
}

fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The fan-out figures of one run.
#[derive(Debug)]
struct Fanout {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    delivered: usize,
    expected: usize,
}

/// Latencies (µs) of the events a subscriber on node `mine` must see:
/// writes made on other nodes (every write when `nodes == 1`).
async fn subscribe(
    mut client: common::Client,
    mine: usize,
    nodes: usize,
    expected: usize,
    latencies: Arc<Mutex<Vec<u64>>>,
) {
    // A query that matches nothing: the subscriber hears every change of
    // the map as a SERVER_EVENT, without a QUERY_UPDATE for each.
    client
        .send(&Message::QuerySub(topgun_core::wire::QuerySub {
            query_id: "q".into(),
            map_name: "fan".into(),
            query: topgun_core::wire::Query {
                where_: Some(rmpv::Value::Map(vec![("none".into(), true.into())])),
                ..Default::default()
            },
            fields: None,
        }))
        .await;
    client
        .recv_until(|m| matches!(m, Message::QueryResp(_)))
        .await;
    let counts = |ev: &ServerEvent| {
        let node: usize = ev.key[1..ev.key.find('-').unwrap()].parse().unwrap();
        nodes == 1 || node != mine
    };
    let mut seen = 0;
    while seen < expected {
        let Some(received) = client.next_within(Duration::from_secs(20)).await else {
            eprintln!("subscriber on node {mine}: no event for 20 s after {seen} of {expected}");
            break;
        };
        let common::Received::Msg(msg) = received else {
            eprintln!("subscriber on node {mine} closed: {received:?}");
            break;
        };
        let events = match msg {
            Message::ServerEvent(ev) => vec![ev],
            Message::ServerBatchEvent(b) => b.events,
            _ => continue,
        };
        let now = micros_now();
        let mut mine_now = Vec::new();
        for ev in events.iter().filter(|ev| counts(ev)) {
            let sent = ev
                .record
                .as_ref()
                .and_then(|r| r.value.as_ref())
                .and_then(rmpv::Value::as_u64)
                .unwrap();
            mine_now.push(now.saturating_sub(sent));
        }
        seen += mine_now.len();
        latencies.lock().await.extend(mine_now);
    }
}

async fn fanout(url: &str, nodes: usize) -> Fanout {
    let mut servers = Vec::new();
    for _ in 0..nodes {
        servers.push(node(url).await);
    }
    let per_node_writes = |n: usize| {
        (0..WRITERS).filter(|w| w % nodes == n).count() * (WRITER_BATCHES * WRITER_BATCH) as usize
    };
    let total: usize = (0..nodes).map(per_node_writes).sum();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut subscribers = Vec::new();
    let mut expected_all = 0;
    for (n, server) in servers.iter().enumerate() {
        let expected = if nodes == 1 {
            total
        } else {
            total - per_node_writes(n)
        };
        for _ in 0..SUBSCRIBERS {
            let client = server.connect().await;
            expected_all += expected;
            subscribers.push(tokio::spawn(subscribe(
                client,
                n,
                nodes,
                expected,
                latencies.clone(),
            )));
        }
    }
    // Every subscription is in place before the first write.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(servers[w % nodes].connect().await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, mut client)| {
            tokio::spawn(async move {
                let n = w % nodes;
                for b in 0..WRITER_BATCHES {
                    let stamp = Timestamp::new(now_millis(), 0, format!("w{w}"));
                    let ops = (0..WRITER_BATCH)
                        .map(|i| {
                            let key = format!("n{n}-w{w}-{}", b * WRITER_BATCH + i);
                            put(i.to_string(), "fan", &key, micros_now(), stamp.clone())
                        })
                        .collect();
                    client.send(&batch(ops)).await;
                    client.recv_until(|m| matches!(m, Message::OpAck(_))).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let ops_per_s = total as f64 / start.elapsed().as_secs_f64();
    for sub in subscribers {
        sub.await.unwrap();
    }
    for server in servers {
        server.stop().await.unwrap();
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    Fanout {
        ops_per_s,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        delivered: latencies.len(),
        expected: expected_all,
    }
}

fn main() {
    if std::env::var(pg::URL_ENV).is_err() {
        eprintln!(
            "postgres bench: SKIPPED, {} is not set (cargo xtask bench postgres starts a PostgreSQL)",
            pg::URL_ENV
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (floor8, floor1, pushed, errors, one, three) = runtime.block_on(async {
        let (mut floors, mut pushes, mut errors) = (Vec::new(), Vec::new(), 0);
        for round in 0..ROUNDS {
            let db = database(&format!("floor{round}")).await;
            floors.push(floor(&db, PUSH_CONNECTIONS).await);
            let server = node(&database(&format!("push{round}")).await).await;
            let per = PUSH_OPS / PUSH_CONNECTIONS / PUSH_BATCH;
            let (pushed, e) = push(server.addr, PUSH_CONNECTIONS, per).await;
            server.stop().await.unwrap();
            pushes.push(pushed);
            errors += e;
        }
        let floor8 = median(&mut floors);
        let pushed = median(&mut pushes);
        let floor1 = floor(&database("floor_one").await, 1).await;
        let one = fanout(&database("fan1").await, 1).await;
        let three = fanout(&database("fan3").await, 3).await;
        (floor8, floor1, pushed, errors, one, three)
    });
    eprintln!("{:<56} {:>12}", "PostgreSQL, durable commits", "ops/s");
    eprintln!(
        "{:<56} {:>12.0}",
        "floor: INSERT … ON CONFLICT, 100 rows, 8 connections", floor8
    );
    eprintln!(
        "{:<56} {:>12.0}",
        "floor: INSERT … ON CONFLICT, 100 rows, 1 connection", floor1
    );
    eprintln!(
        "{:<56} {:>12.0} ({:.2}x the 8-connection floor; goal >= 0.7x; {errors} errors)",
        "push through one node, 8 connections × 100-op batches",
        pushed,
        pushed / floor8
    );
    for (name, f) in [("1 node", &one), ("3 nodes", &three)] {
        eprintln!(
            "{:<56} {:>12.0} (delivery p50 {:.1} ms, p99 {:.1} ms; {}/{} events)",
            format!("fan-out, {WRITERS} writers over {name}"),
            f.ops_per_s,
            f.p50_ms,
            f.p99_ms,
            f.delivered,
            f.expected
        );
    }
    let fan = |f: &Fanout| {
        format!(
            "{{\"ops_per_s\": {:.0}, \"delivery_p50_ms\": {:.2}, \"delivery_p99_ms\": {:.2}, \"delivered\": {}, \"expected\": {}}}",
            f.ops_per_s, f.p50_ms, f.p99_ms, f.delivered, f.expected
        )
    };
    let json = format!(
        concat!(
            "{{\n  \"push_ops\": {},\n  \"floor_8_connections_rows_per_s\": {:.0},\n",
            "  \"floor_1_connection_rows_per_s\": {:.0},\n",
            "  \"push_one_node_ops_per_s\": {:.0},\n  \"push_errors\": {},\n",
            "  \"push_over_floor\": {:.3},\n  \"goal_push_over_floor\": 0.7,\n",
            "  \"fanout_writers\": {},\n  \"fanout_1_node\": {},\n  \"fanout_3_nodes\": {}\n}}\n"
        ),
        PUSH_OPS,
        floor8,
        floor1,
        pushed,
        errors,
        pushed / floor8,
        WRITERS,
        fan(&one),
        fan(&three)
    );
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("postgres.json"), json).unwrap();
    eprintln!("wrote {}", out.join("postgres.json").display());
}
