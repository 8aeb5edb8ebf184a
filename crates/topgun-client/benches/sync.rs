//! Sync benchmark (`cargo xtask bench sync`).
//!
//! Every scenario runs against an in-process `topgun-server` on 127.0.0.1
//! (port 0) with a durable redb data dir, and clients on redb files, all
//! in one run:
//!
//! 1. **Push**: a client writes 100,000 ops offline (not timed), then
//!    connects; timed from the start of sync until `wait_until_synced`
//!    (every op acknowledged — so fsynced — by the server and marked synced
//!    locally). Goal >= 100,000 ops/s.
//! 2. **Initial pull**: a server holding a 1,000,000-key map; a fresh
//!    client pulls it. Goal <= 10 s. PowerSync's published initial sync
//!    rate (27.6k rows/s) is printed for reference. Baseline: the raw
//!    redb floor, the same records put into a plain `(map, key)` table in
//!    the order a pull brings them, as many per transaction as one merge.
//! 3. **Catch-up**: the client of scenario 1 (in sync with its 100,000-key
//!    map) goes offline, another client changes one key, the first client
//!    reconnects; bytes it exchanged (sent + received). Goal <= 16 KB.
//! 4. **Latency**: `put` on client A until client B's subscription sees the
//!    change (origin `Remote`, carried by a `SERVER_EVENT`); 200 samples
//!    after a warm-up. Goal: median <= 5 ms.
//! 5. **Restart + catch-up**: the client of scenario 2 (1,000,000 keys,
//!    closed) starts again in a fresh process after one key changed on the
//!    server; timed from opening the store until synced, with the
//!    process's peak RSS. Goals <= 200 ms and <= 30 MB.
//!
//! Clients send a token, as a deployment with auth does, so a connection
//! is usable at `AUTH_ACK` instead of after the no-auth grace period (the
//! server runs with auth disabled and acknowledges any token).
//!
//! Prints a table and writes `target/bench/sync.json`. For a quick run,
//! `TOPGUN_BENCH_PUSH_OPS` and `TOPGUN_BENCH_PULL_KEYS` shrink scenarios
//! 1/3 and 2.

#[path = "../../topgun-storage/benches/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use topgun_client::{Origin, TopGunClient};
use topgun_core::{MerkleTree, Timestamp};
use topgun_server::{ServerConfig, ServerError, StoreConfig};
use topgun_storage::{RedbStore, Store, StoreRecord};

const PUSH_OPS: usize = 100_000;
const PULL_KEYS: usize = 1_000_000;
const LATENCY_SAMPLES: usize = 200;
const LATENCY_WARM_UP: usize = 20;
/// Concurrent writers filling the offline client (not timed).
const WRITERS: usize = 64;
/// Records per `apply_remote` when filling the server's store.
const FILL_BATCH: usize = 50_000;
/// Longest wait for any scenario.
const WAIT: Duration = Duration::from_secs(300);
/// The token every client sends (see the module docs).
const TOKEN: &str = "bench";

const GOAL_PUSH_OPS_PER_S: f64 = 100_000.0;
const GOAL_PULL_S: f64 = 10.0;
const GOAL_CATCH_UP_BYTES: u64 = 16 * 1024;
const GOAL_LATENCY_MEDIAN_MS: f64 = 5.0;
const GOAL_RESTART_MS: f64 = 200.0;
const GOAL_RESTART_RSS_MB: f64 = 30.0;
/// The key scenario 5 changes.
const RESTART_KEY: &str = "row-0000007";
/// PowerSync's published initial sync rate, for reference.
const POWERSYNC_ROWS_PER_S: f64 = 27_600.0;

/// A value of about 100 bytes once encoded.
fn value(i: usize) -> serde_json::Value {
    serde_json::json!({
        "n": i,
        "title": "benchmark record",
        "body": "0123456789abcdef0123456789abcdef0123456789abcdef",
        "done": i % 2 == 0,
    })
}

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Starts a server on `dir` and waits until it serves (it builds its
    /// Merkle trees from the store first).
    async fn start(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let mut config = ServerConfig::new(StoreConfig::DataDir(dir.to_owned()));
        // The default (20k ops/s per connection) would be the bottleneck.
        config.limits.ops_per_second = 100_000_000;
        config.limits.ops_burst = 200_000_000;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(topgun_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        let server = Self {
            url: format!("ws://127.0.0.1:{port}/ws"),
            stop: Some(stop),
            task,
        };
        // A client with no map is synced once the server answers AUTH.
        let probe = TopGunClient::builder()
            .server_url(&server.url)
            .token(TOKEN)
            .build()
            .await
            .expect("probe client");
        assert!(
            probe.wait_until_synced(WAIT).await.expect("probe"),
            "the server did not come up"
        );
        probe.close().await;
        server
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server ran");
    }
}

async fn offline_client(path: &Path, node: &str) -> TopGunClient {
    TopGunClient::builder()
        .redb_path(path)
        .node_id(node)
        .build()
        .await
        .expect("offline client")
}

async fn syncing_client(path: &Path, node: &str, url: &str, map: &str) -> TopGunClient {
    TopGunClient::builder()
        .redb_path(path)
        .node_id(node)
        .server_url(url)
        .token(TOKEN)
        .sync_maps([map])
        .build()
        .await
        .expect("syncing client")
}

async fn synced(client: &TopGunClient, what: &str) {
    assert!(
        client.wait_until_synced(WAIT).await.expect("wait"),
        "{what}: not synced within {WAIT:?} (state {:?})",
        client.state()
    );
}

/// Closes a client: sync stops (releasing its hold on the store) before
/// `close` returns, and dropping the last handle releases the store file.
async fn close(client: TopGunClient) {
    client.close().await;
    drop(client);
}

/// Scenario 1. Returns (ops/s, seconds).
async fn push(dir: &Path, url: &str, ops: usize) -> (f64, f64) {
    let path = dir.join("push.redb");
    let client = offline_client(&path, "bench-push").await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let map = client.get_json_map("bench").expect("map");
            tokio::spawn(async move {
                for i in (w..ops).step_by(WRITERS) {
                    map.put(&format!("key-{i:07}"), value(i))
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(client.pending_ops().await.expect("pending"), ops as u64);
    close(client).await;

    let start = Instant::now();
    let client = syncing_client(&path, "bench-push", url, "bench").await;
    synced(&client, "push").await;
    let secs = start.elapsed().as_secs_f64();
    let stats = client.store_stats().await.expect("stats");
    assert_eq!(
        (stats.pending_ops, stats.dirty_records),
        (0, 0),
        "every op is synced"
    );
    close(client).await;
    (ops as f64 / secs, secs)
}

/// Scenario 3, on the client of scenario 1. Returns (bytes sent, bytes
/// received, frames).
async fn catch_up(dir: &Path, url: &str, keys: usize) -> (u64, u64, u64) {
    // Another client changes one key while the first one is offline.
    let other = syncing_client(&dir.join("other.redb"), "bench-other", url, "bench").await;
    synced(&other, "second client").await;
    let changed = format!("key-{:07}", keys / 2);
    other
        .get_json_map("bench")
        .expect("map")
        .put(&changed, serde_json::json!({"changed": true}))
        .await
        .expect("put");
    synced(&other, "second client's write").await;
    close(other).await;

    let client = syncing_client(&dir.join("push.redb"), "bench-push", url, "bench").await;
    let before = client.traffic();
    synced(&client, "catch-up").await;
    let got = client
        .get_json_map("bench")
        .expect("map")
        .get(&changed)
        .await
        .expect("get");
    assert_eq!(got, Some(serde_json::json!({"changed": true})), "caught up");
    let after = client.traffic();
    close(client).await;
    (
        after.bytes_sent - before.bytes_sent,
        after.bytes_received - before.bytes_received,
        (after.frames_sent + after.frames_received) - (before.frames_sent + before.frames_received),
    )
}

/// Fills a server data dir with a `keys`-record map, straight into its
/// store.
async fn fill_server(data_dir: &Path, keys: usize) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let store = RedbStore::open(data_dir.join(topgun_server::DATA_FILE_NAME)).expect("open");
    let base = 1_700_000_000_000u64;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(FILL_BATCH) {
        let records = chunk
            .iter()
            .map(|&i| StoreRecord {
                map_name: "big".into(),
                key: format!("row-{i:07}"),
                value: Some(rmp_serde::to_vec(&value(i)).expect("encode")),
                timestamp: Timestamp::new(base + i as u64, 0, "seed"),
                ttl_ms: None,
                dirty: false,
            })
            .collect();
        store.apply_remote(records).await.expect("fill");
    }
    store.close().await.expect("close");
}

/// Scenario 5, in the child process: opens the pulled client, syncs, and
/// prints `RESTART <ms> <peak RSS KiB>`.
fn restart_child(path: &Path, url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ms = rt.block_on(async {
        let start = Instant::now();
        let client = syncing_client(path, "bench-pull", url, "big").await;
        synced(&client, "restart").await;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let got = client
            .get_json_map("big")
            .expect("map")
            .get(RESTART_KEY)
            .await
            .expect("get");
        assert_eq!(got, Some(serde_json::json!({"changed": true})), "caught up");
        close(client).await;
        ms
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    // The parent reads this line.
    #[allow(clippy::print_stdout)]
    {
        println!("RESTART {ms:.1} {hwm}");
    }
}

/// Scenario 5: changes one key in the server's store, restarts the server
/// and runs [`restart_child`]. Returns (ms, peak RSS MB).
async fn restart(dir: &Path) -> (f64, f64) {
    let data = dir.join("pull-server");
    let store = RedbStore::builder()
        .merkle_sums(false)
        .open(data.join(topgun_server::DATA_FILE_NAME))
        .expect("open");
    store
        .apply_remote(vec![StoreRecord {
            map_name: "big".into(),
            key: RESTART_KEY.into(),
            value: Some(rmp_serde::to_vec(&serde_json::json!({"changed": true})).expect("encode")),
            // Newer than the fill, and not in the future (the client's
            // clock refuses records from beyond its drift bound).
            timestamp: Timestamp::new(
                u64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("clock")
                        .as_millis(),
                )
                .expect("millis"),
                0,
                "other",
            ),
            ttl_ms: None,
            dirty: false,
        }])
        .await
        .expect("change");
    store.close().await.expect("close");
    let server = Server::start(&data).await;
    let exe = std::env::current_exe().expect("exe");
    let (path, url) = (dir.join("pull.redb"), server.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .arg("--restart-child")
            .arg(path)
            .arg(url)
            .output()
    })
    .await
    .expect("join")
    .expect("run the restart child");
    server.stop().await;
    assert!(
        out.status.success(),
        "restart child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = line
        .lines()
        .find_map(|l| l.strip_prefix("RESTART "))
        .expect("the child's RESTART line")
        .split(' ')
        .map(|f| f.parse().expect("number"))
        .collect();
    (fields[0], fields[1] / 1024.0)
}

/// Scenario 2. Returns seconds.
async fn initial_pull(dir: &Path, keys: usize) -> f64 {
    let data = dir.join("pull-server");
    let filled = Instant::now();
    fill_server(&data, keys).await;
    eprintln!(
        "  (filled the server with {keys} records in {:.1}s)",
        filled.elapsed().as_secs_f64()
    );
    let server = Server::start(&data).await;
    let start = Instant::now();
    let client = syncing_client(&dir.join("pull.redb"), "bench-pull", &server.url, "big").await;
    synced(&client, "initial pull").await;
    let secs = start.elapsed().as_secs_f64();
    let stats = client.store_stats().await.expect("stats");
    assert_eq!(stats.records, keys as u64, "every record pulled");
    close(client).await;
    server.stop().await;
    secs
}

/// Records per transaction of the raw floor: about what one merge of a
/// pull holds (the frames that arrive while the previous merge commits).
const FLOOR_BATCH: usize = 16_384;

/// The raw redb floor for scenario 2: the same records (value and a
/// timestamp, about what the store keeps) put into a plain redb table
/// keyed `(map, key)`, in the order a pull brings them (Merkle leaf by
/// leaf), `FLOOR_BATCH` per transaction without fsync and one durable
/// commit at the end, with the client's redb cache size. Returns seconds.
fn raw_pull_floor(dir: &Path, keys: usize) -> f64 {
    const TABLE: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("floor");
    let mut rows: Vec<(usize, String, Vec<u8>)> = (0..keys)
        .map(|i| {
            let key = format!("row-{i:07}");
            let mut bytes = rmp_serde::to_vec(&value(i)).expect("encode");
            bytes.extend_from_slice(&(1_700_000_000_000u64 + i as u64).to_be_bytes());
            bytes.extend_from_slice(b"seed");
            (MerkleTree::leaf_of(&key), key, bytes)
        })
        .collect();
    rows.sort_by_key(|(leaf, _, _)| *leaf);
    let path = dir.join("floor.redb");
    let db = redb::Builder::new()
        .set_cache_size(topgun_client::DEFAULT_REDB_CACHE_BYTES)
        .create(&path)
        .expect("create floor");
    let start = Instant::now();
    for chunk in rows.chunks(FLOOR_BATCH) {
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(redb::Durability::None)
            .expect("durability");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            let mut sorted: Vec<&(usize, String, Vec<u8>)> = chunk.iter().collect();
            sorted.sort_by(|a, b| a.1.cmp(&b.1));
            for (_, key, bytes) in sorted {
                // As a merge does: read the current record, then write.
                let _ = redb::ReadableTable::get(&table, ("big", key.as_str())).expect("get");
                table
                    .insert(("big", key.as_str()), bytes.as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(redb::Durability::Immediate)
        .expect("durability");
    txn.commit().expect("commit");
    let secs = start.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_file(&path);
    secs
}

/// Scenario 4. Returns the samples in ms, sorted.
async fn latency(dir: &Path, url: &str) -> Vec<f64> {
    let a = syncing_client(&dir.join("lat-a.redb"), "bench-lat-a", url, "live").await;
    let b = syncing_client(&dir.join("lat-b.redb"), "bench-lat-b", url, "live").await;
    synced(&a, "latency client A").await;
    synced(&b, "latency client B").await;
    let ma = a.get_json_map("live").expect("map");
    let mut events = b.get_json_map("live").expect("map").subscribe();
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_WARM_UP + LATENCY_SAMPLES {
        let key = format!("k{i}");
        let start = Instant::now();
        ma.put(&key, value(i)).await.expect("put");
        loop {
            let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("event within 10 s")
                .expect("event");
            if e.key == key && e.origin == Origin::Remote {
                break;
            }
        }
        if i >= LATENCY_WARM_UP {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop((ma, events));
    close(a).await;
    close(b).await;
    samples.sort_by(f64::total_cmp);
    samples
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--restart-child") {
        restart_child(Path::new(&args[at + 1]), &args[at + 2]);
        return;
    }
    let push_ops = env_or("TOPGUN_BENCH_PUSH_OPS", PUSH_OPS);
    let pull_keys = env_or("TOPGUN_BENCH_PULL_KEYS", PULL_KEYS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();

    let (push_rate, push_secs, catch, lat) = rt.block_on(async {
        let server = Server::start(&dir.join("server")).await;
        eprintln!("push: {push_ops} offline ops…");
        let (rate, secs) = push(dir, &server.url, push_ops).await;
        eprintln!("catch-up…");
        let catch = catch_up(dir, &server.url, push_ops).await;
        eprintln!("latency…");
        let lat = latency(dir, &server.url).await;
        server.stop().await;
        (rate, secs, catch, lat)
    });
    eprintln!("initial pull: {pull_keys} keys…");
    let pull_secs = rt.block_on(initial_pull(dir, pull_keys));
    eprintln!("raw redb floor for the pull…");
    let floor_secs = raw_pull_floor(dir, pull_keys);
    eprintln!("restart + catch-up…");
    let (restart_ms, restart_mb) = rt.block_on(restart(dir));
    let pull_rate = pull_keys as f64 / pull_secs;
    let (sent, received, frames) = catch;
    let catch_bytes = sent + received;
    let (median, p95) = (percentile(&lat, 0.5), percentile(&lat, 0.95));

    let push_ok = push_rate >= GOAL_PUSH_OPS_PER_S;
    let pull_ok = pull_secs <= GOAL_PULL_S;
    let catch_ok = catch_bytes <= GOAL_CATCH_UP_BYTES;
    let lat_ok = median <= GOAL_LATENCY_MEDIAN_MS;
    let restart_ok = restart_ms <= GOAL_RESTART_MS && restart_mb <= GOAL_RESTART_RSS_MB;
    eprintln!("\nsync: in-process server on 127.0.0.1, redb server and clients");
    eprintln!(
        "{:<44} {:>14} {:>18} {:>7}",
        "scenario", "result", "goal", ""
    );
    eprintln!(
        "{:<44} {:>10.0} op/s {:>13} op/s {:>7}",
        format!("1. push {push_ops} offline ops ({push_secs:.2}s)"),
        push_rate,
        ">= 100000",
        verdict(push_ok)
    );
    eprintln!(
        "{:<44} {:>12.2} s {:>16} s {:>7}",
        format!("2. initial pull of {pull_keys} keys"),
        pull_secs,
        "<= 10",
        verdict(pull_ok)
    );
    eprintln!(
        "{:<44} {:>8.0} rows/s {:>18} {:>7}",
        "   pull rate (PowerSync: 27600 rows/s)", pull_rate, "", ""
    );
    eprintln!(
        "{:<44} {:>12.2} s {:>18} {:>7}",
        "   raw redb floor, (map, key), pull order", floor_secs, "", ""
    );
    eprintln!(
        "{:<44} {:>13.2}x {:>18} {:>7}",
        "   pull / raw redb floor",
        pull_secs / floor_secs,
        "",
        ""
    );
    eprintln!(
        "{:<44} {:>12} B {:>16} B {:>7}",
        format!("3. catch-up, 1 of {push_ops} keys changed"),
        catch_bytes,
        "<= 16384",
        verdict(catch_ok)
    );
    eprintln!(
        "{:<44} {:>14} {:>18} {:>7}",
        "   sent / received / frames",
        format!("{sent}/{received}/{frames}"),
        "",
        ""
    );
    eprintln!(
        "{:<44} {:>11.2} ms {:>15} ms {:>7}",
        format!("4. latency A put -> B event, median ({LATENCY_SAMPLES})"),
        median,
        "<= 5",
        verdict(lat_ok)
    );
    eprintln!("{:<44} {:>11.2} ms", "   latency p95", p95);
    eprintln!(
        "{:<44} {:>14} {:>18} {:>7}",
        format!("5. restart + catch-up, {pull_keys} keys"),
        format!("{restart_ms:.0} ms {restart_mb:.1} MB"),
        "<= 200 ms, 30 MB",
        verdict(restart_ok)
    );

    let json = format!(
        concat!(
            "{{\n",
            "  \"push_ops\": {},\n  \"push_seconds\": {:.3},\n  \"push_ops_per_s\": {:.0},\n",
            "  \"goal_push_ops_per_s\": {:.0},\n",
            "  \"pull_keys\": {},\n  \"pull_seconds\": {:.3},\n  \"pull_rows_per_s\": {:.0},\n",
            "  \"goal_pull_seconds\": {:.1},\n  \"powersync_rows_per_s\": {:.0},\n",
            "  \"raw_redb_pull_floor_seconds\": {:.3},\n  \"pull_vs_raw_floor\": {:.3},\n",
            "  \"catch_up_keys\": {},\n  \"catch_up_bytes_sent\": {},\n",
            "  \"catch_up_bytes_received\": {},\n  \"catch_up_bytes\": {},\n",
            "  \"catch_up_frames\": {},\n  \"goal_catch_up_bytes\": {},\n",
            "  \"latency_samples\": {},\n  \"latency_median_ms\": {:.3},\n",
            "  \"latency_p95_ms\": {:.3},\n  \"goal_latency_median_ms\": {:.1},\n",
            "  \"restart_catch_up_ms\": {:.1},\n  \"restart_peak_rss_mb\": {:.1},\n",
            "  \"goal_restart_ms\": {:.0},\n  \"goal_restart_rss_mb\": {:.0}\n}}\n"
        ),
        push_ops,
        push_secs,
        push_rate,
        GOAL_PUSH_OPS_PER_S,
        pull_keys,
        pull_secs,
        pull_rate,
        GOAL_PULL_S,
        POWERSYNC_ROWS_PER_S,
        floor_secs,
        pull_secs / floor_secs,
        push_ops,
        sent,
        received,
        catch_bytes,
        frames,
        GOAL_CATCH_UP_BYTES,
        lat.len(),
        median,
        p95,
        GOAL_LATENCY_MEDIAN_MS,
        restart_ms,
        restart_mb,
        GOAL_RESTART_MS,
        GOAL_RESTART_RSS_MB,
    );
    let out = support::out_dir();
    std::fs::create_dir_all(&out).expect("create target/bench");
    std::fs::write(out.join("sync.json"), json).expect("write sync.json");
    eprintln!("wrote {}", out.join("sync.json").display());
}
