//! Client benchmark (`cargo xtask bench client`): the local-first hot paths
//! on a durable redb file, each against a baseline measured in the same run
//! where the goal is a ratio. Prints a table and writes
//! `target/bench/client.json`.
//!
//! Goals:
//! - 64 concurrent `put`s (durable): >= 0.8x the raw-redb group-commit
//!   baseline of the storage bench (the same two inserts per write);
//! - `get` hits from the working set: >= 5 million/s on one thread;
//! - `get` misses (store read + decode): >= 0.5x raw redb point read +
//!   decode;
//! - a query with a predicate, sort and limit 50 over 100,000 records:
//!   <= 100 ms; a live-query change ready <= 1 ms after `put` returns
//!   (median);
//! - 1,000,000 records written with a working set of 10,000: peak RSS
//!   <= 80 MB while writing and while scanning them all (measured in a
//!   child process, so nothing else in this run counts against it).

#[path = "../../topgun-storage/benches/support/mod.rs"]
mod support;

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use topgun_client::query::{Predicate, Query, SortDirection};
use topgun_client::{TopGunClient, WorkingSetLimits};

const QUERY_RECORDS: usize = 100_000;
const RSS_RECORDS: usize = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Person {
    age: u32,
    city: String,
    score: u64,
}

fn person(i: usize) -> Person {
    let cities = ["Oslo", "Rome", "Lima", "Pune"];
    Person {
        age: (i * 37 % 80) as u32,
        city: cities[i % 4].to_owned(),
        score: (i as u64 * 2_654_435_761) % 1_000_003,
    }
}

async fn redb_client(path: &Path, limits: WorkingSetLimits) -> TopGunClient {
    TopGunClient::builder()
        .redb_path(path)
        .working_set(limits)
        .build()
        .await
        .expect("open client")
}

/// 64 tasks putting `writes` records in total.
async fn put64(client: &TopGunClient, writes: usize) -> f64 {
    let map = client.get_map::<Vec<u8>>("bench").expect("map");
    let start = Instant::now();
    let tasks: Vec<_> = (0..support::TASKS)
        .map(|t| {
            let map = map.clone();
            tokio::spawn(async move {
                for i in 0..support::per_task(writes) {
                    map.put(&support::key(t, i), support::value())
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (support::TASKS * support::per_task(writes)) as f64 / start.elapsed().as_secs_f64()
}

/// `get` hits: 1,000 hot keys, read round-robin on one thread.
async fn get_hits(client: &TopGunClient, reads: usize) -> f64 {
    let map = client.get_map::<u64>("hot").expect("map");
    let keys: Vec<String> = (0..1_000).map(|i| format!("hot-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        map.put(k, i as u64).await.expect("put");
    }
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..reads {
        sum += map
            .get(&keys[i % keys.len()])
            .await
            .expect("get")
            .expect("present");
    }
    let rate = reads as f64 / start.elapsed().as_secs_f64();
    assert!(sum > 0);
    rate
}

/// `get` misses: a one-entry working set, scattered reads of `n` records.
async fn get_misses(path: &Path, n: usize) -> f64 {
    let client = redb_client(
        path,
        WorkingSetLimits {
            max_entries: 1,
            max_bytes: usize::MAX,
        },
    )
    .await;
    let map = client.get_map::<u64>("cold").expect("map");
    // Load through 64 tasks (fast group commits), not timed.
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let map = map.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(64) {
                    map.put(&format!("key-{i:07}"), i as u64)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let misses_before = client.working_set_stats().misses;
    let start = Instant::now();
    for i in 0..n {
        let k = format!("key-{:07}", (i * 7_919) % n);
        map.get(&k).await.expect("get").expect("present");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert!(
        client.working_set_stats().misses - misses_before >= n as u64 - 1,
        "every read missed"
    );
    rate
}

/// Median query time (ms) with a predicate, sort and limit 50 over 100k
/// records, and the median delay (ms) from `put` returning to the live
/// query's change being ready.
async fn query_and_live(path: &Path) -> (f64, f64, usize) {
    let client = redb_client(path, WorkingSetLimits::default()).await;
    let people = client.get_map::<Person>("people").expect("map");
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let people = people.clone();
            tokio::spawn(async move {
                for i in (t..QUERY_RECORDS).step_by(64) {
                    people
                        .put(&format!("p{i:06}"), person(i))
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let q = Query::new()
        .filter(Predicate::and(vec![
            Predicate::gte("age", 30),
            Predicate::eq("city", "Oslo"),
        ]))
        .sort_by("score", SortDirection::Desc)
        .limit(50);
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let page = people.query(&q).await.expect("query");
        times.push(start.elapsed().as_secs_f64() * 1e3);
        rows = page.results.len();
    }
    let query_ms = median(&mut times);

    let mut live = people.live_query(q).await.expect("live query");
    let mut delays = Vec::new();
    for i in 0..201u64 {
        // Each write enters the top-50 window (a new best score).
        let p = Person {
            age: 40,
            city: "Oslo".into(),
            score: 2_000_000 + i,
        };
        people.put(&format!("live-{i}"), p).await.expect("put");
        let returned = Instant::now();
        loop {
            let change = live.next().await.expect("change");
            if change.key == format!("live-{i}") {
                break;
            }
        }
        delays.push(returned.elapsed().as_secs_f64() * 1e3);
    }
    (query_ms, median(&mut delays), rows)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The child: writes 1M records with a 10k working set, then scans them
/// all, sampling RSS every 10 ms; prints `write_peak_kb scan_peak_kb`.
fn rss_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb("VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (write_peak, scan_peak, scanned) = rt.block_on(async {
        let limits = WorkingSetLimits {
            max_entries: 10_000,
            max_bytes: 64 << 20,
        };
        let client = redb_client(&dir.join("rss.redb"), limits).await;
        let map = client.get_map::<Person>("big").expect("map");
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let map = map.clone();
                tokio::spawn(async move {
                    for i in (t..RSS_RECORDS).step_by(64) {
                        map.put(&format!("r{i:07}"), person(i)).await.expect("put");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let write_peak = peak.swap(0, Ordering::Relaxed).max(rss_kb("VmRSS:"));
        let mut entries = map.entries();
        let mut n = 0usize;
        while let Some(e) = entries.next().await {
            e.expect("entry");
            n += 1;
        }
        let scan_peak = peak.load(Ordering::Relaxed).max(rss_kb("VmRSS:"));
        (write_peak, scan_peak, n)
    });
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert_eq!(scanned, RSS_RECORDS);
    // The parent reads this line from the child's stdout.
    #[allow(clippy::print_stdout)]
    {
        println!("{write_peak} {scan_peak}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--rss-child") {
        rss_child(Path::new(&args[pos + 1]));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let writes = support::WRITES;
    let group = rt.block_on(support::raw_group_commit(dir.path(), writes));
    let puts = rt.block_on(async {
        let client = redb_client(&dir.path().join("put.redb"), WorkingSetLimits::default()).await;
        put64(&client, writes).await
    });
    let hits = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt")
        .block_on(async {
            let client =
                redb_client(&dir.path().join("hits.redb"), WorkingSetLimits::default()).await;
            get_hits(&client, 5_000_000).await
        });
    let miss_n = 100_000;
    let raw_reads = support::raw_point_read_decode(
        dir.path(),
        miss_n,
        &rmp_serde::to_vec(&42u64).expect("encode"),
    );
    let misses = rt.block_on(get_misses(&dir.path().join("misses.redb"), miss_n));
    let (query_ms, live_ms, rows) = rt.block_on(query_and_live(&dir.path().join("query.redb")));
    assert_eq!(rows, 50);

    let child = std::process::Command::new(&args[0])
        .arg("--rss-child")
        .arg(dir.path())
        .output()
        .expect("run the RSS child");
    assert!(
        child.status.success(),
        "RSS child failed: {}",
        String::from_utf8_lossy(&child.stderr)
    );
    let out = String::from_utf8_lossy(&child.stdout);
    let mut parts = out
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("kb"));
    let (write_kb, scan_kb) = (parts.next().expect("write"), parts.next().expect("scan"));

    let (put_ratio, miss_ratio) = (puts / group, misses / raw_reads);
    let (write_mb, scan_mb) = (write_kb as f64 / 1024.0, scan_kb as f64 / 1024.0);
    eprintln!("\nclient benchmark (redb, durable)");
    eprintln!("{:<48} {:>14} {:>14}", "scenario", "measured", "goal");
    eprintln!(
        "{:<48} {:>12.0}/s {:>14}",
        "raw redb group commit (baseline)", group, ""
    );
    eprintln!("{:<48} {:>12.0}/s {:>14}", "64 concurrent put", puts, "");
    eprintln!(
        "{:<48} {:>13.2}x {:>13}x",
        "  put / raw group commit", put_ratio, ">= 0.8"
    );
    eprintln!(
        "{:<48} {:>12.0}/s {:>14}",
        "get hit (working set, 1 thread)", hits, ">= 5000000/s"
    );
    eprintln!(
        "{:<48} {:>12.0}/s {:>14}",
        "raw redb point read + decode (baseline)", raw_reads, ""
    );
    eprintln!(
        "{:<48} {:>12.0}/s {:>14}",
        "get miss (store read + decode)", misses, ""
    );
    eprintln!(
        "{:<48} {:>13.2}x {:>13}x",
        "  get miss / raw read", miss_ratio, ">= 0.5"
    );
    eprintln!(
        "{:<48} {:>11.1} ms {:>14}",
        "query: predicate + sort + limit 50 over 100k", query_ms, "<= 100 ms"
    );
    eprintln!(
        "{:<48} {:>11.3} ms {:>14}",
        "live query change after put (median)", live_ms, "<= 1 ms"
    );
    eprintln!(
        "{:<48} {:>11.1} MB {:>14}",
        "peak RSS writing 1M records (10k working set)", write_mb, "<= 80 MB"
    );
    eprintln!(
        "{:<48} {:>11.1} MB {:>14}",
        "peak RSS scanning 1M records", scan_mb, "<= 80 MB"
    );

    let report = json!({
        "raw_group_commit_per_s": group.round(),
        "put_64_tasks_per_s": puts.round(),
        "put_ratio_vs_raw_group_commit": (put_ratio * 1000.0).round() / 1000.0,
        "get_hit_per_s": hits.round(),
        "raw_point_read_decode_per_s": raw_reads.round(),
        "get_miss_per_s": misses.round(),
        "get_miss_ratio_vs_raw": (miss_ratio * 1000.0).round() / 1000.0,
        "query_100k_ms": (query_ms * 100.0).round() / 100.0,
        "live_query_delay_median_ms": (live_ms * 1000.0).round() / 1000.0,
        "rss_write_1m_peak_mb": (write_mb * 10.0).round() / 10.0,
        "rss_scan_1m_peak_mb": (scan_mb * 10.0).round() / 10.0,
        "goals": {
            "put_ratio_vs_raw_group_commit": ">= 0.8",
            "get_hit_per_s": ">= 5000000",
            "get_miss_ratio_vs_raw": ">= 0.5",
            "query_100k_ms": "<= 100",
            "live_query_delay_median_ms": "<= 1",
            "rss_peak_mb": "<= 80"
        }
    });
    let out = support::out_dir();
    std::fs::create_dir_all(&out).expect("create target/bench");
    let text = serde_json::to_string_pretty(&report).expect("json");
    std::fs::write(out.join("client.json"), text + "\n").expect("write client.json");
    eprintln!("wrote {}", out.join("client.json").display());
}
