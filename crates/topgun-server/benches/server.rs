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
//! Then the same kind of push (8 connections) against a server process
//! pinned with `taskset` to one core, then to two, in one run: how the
//! server scales with cores (goal >= 1.7x from 1 to 2), each with one
//! commit lane (the default on up to 3 cores); then on two cores with two
//! lanes, what lanes add there.
//!
//! Prints a table and writes `target/bench/server.json`.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{put, ts, TestServer};
use redb::{Database, Durability, TableDefinition};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;
use support::{out_dir, push};
use topgun_server::{ServerConfig, StoreConfig};

/// The allocator `topgun serve` runs on (the pinned server is this
/// process, started again under `taskset`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
/// Connections, and batches each, of the pinned push.
const PINNED_CONNECTIONS: u64 = 8;
const PINNED_BATCHES: u64 = 150;

/// The server of the pinned scenario, in this bench's own process re-run
/// as `--serve-child DIR LANES` under `taskset`: prints `PORT <n>` and
/// serves until its stdin closes.
fn serve_child(dir: &Path, lanes: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = ServerConfig::new(StoreConfig::DataDir(dir.to_owned()));
        config.lanes = lanes;
        // Measured here: the server's own ceiling, not its per-connection rate.
        config.limits.ops_per_second = 100_000_000;
        config.limits.ops_burst = 200_000_000;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = stop.send(());
        });
        // The parent reads this line.
        #[allow(clippy::print_stdout)]
        {
            println!("PORT {port}");
        }
        topgun_server::run(listener, config, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
}

/// Push (`PINNED_CONNECTIONS` connections of 100-op batches) against a
/// server process pinned to `cores` with `taskset`, its data directory of
/// `lanes` commit lanes; ops/s, or `None` without `taskset`.
fn pinned_push(dir: &Path, cores: &str, lanes: usize) -> Option<f64> {
    use std::io::BufRead;
    let mut child = std::process::Command::new("taskset")
        .args(["-c", cores])
        .arg(std::env::current_exe().unwrap())
        .arg("--serve-child")
        .arg(dir.join(format!("pinned-{}-{lanes}", cores.replace(',', "-"))))
        .arg(lanes.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(port) = line.trim().strip_prefix("PORT ") else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rate, errors) = runtime.block_on(push(addr, PINNED_CONNECTIONS, PINNED_BATCHES));
    assert_eq!(errors, 0, "the pinned server refused batches");
    drop(child.stdin.take());
    let _ = child.wait();
    Some(rate)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve-child") {
        serve_child(Path::new(&args[at + 1]), args[at + 2].parse().unwrap());
        return;
    }
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
        let push = push(server.addr, 1, PUSH_BATCHES).await;
        server.stop().await.unwrap();
        (one, eight, push)
    });
    drop(runtime);
    let one_core = pinned_push(dir.path(), "0", 1);
    let two_cores = pinned_push(dir.path(), "0,1", 1);
    let two_lanes = pinned_push(dir.path(), "0,1", 2);
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
    let scaling = match (one_core, two_cores) {
        (Some(one), Some(two)) => {
            eprintln!(
                "{:<48} {:>12.0} / {:.0} ({:.2}x; goal >= 1.7x)",
                "push, 8 connections, server on 1 / 2 cores",
                one,
                two,
                two / one
            );
            if let Some(lanes) = two_lanes {
                eprintln!(
                    "{:<48} {:>12.0} ({:.2}x one lane on 2 cores)",
                    "push, 8 connections, 2 cores, 2 commit lanes",
                    lanes,
                    lanes / two
                );
            }
            format!("{:.3}", two / one)
        }
        _ => {
            eprintln!("push on 1 / 2 cores: skipped (no taskset)");
            "null".to_owned()
        }
    };
    let json = format!(
        concat!(
            "{{\n  \"ops_per_connection\": {},\n  \"raw_redb_ops_per_s\": {:.0},\n",
            "  \"one_connection_ops_per_s\": {:.0},\n  \"eight_connections_ops_per_s\": {:.0},\n",
            "  \"push_one_connection_ops_per_s\": {:.0},\n",
            "  \"push_one_connection_errors\": {},\n",
            "  \"push_pinned_1_core_ops_per_s\": {},\n",
            "  \"push_pinned_2_cores_ops_per_s\": {},\n",
            "  \"push_pinned_2_cores_2_lanes_ops_per_s\": {},\n",
            "  \"push_2_over_1_cores\": {},\n  \"goal_push_2_over_1_cores\": 1.7\n}}\n"
        ),
        PER_CONNECTION,
        baseline,
        one,
        eight,
        push,
        push_errors,
        one_core.map_or("null".to_owned(), |v| format!("{v:.0}")),
        two_cores.map_or("null".to_owned(), |v| format!("{v:.0}")),
        two_lanes.map_or("null".to_owned(), |v| format!("{v:.0}")),
        scaling
    );
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("server.json"), json).unwrap();
    eprintln!("wrote {}", out.join("server.json").display());
}
