//! Shared data directory benchmark (`cargo xtask bench shared_dir`): a
//! follower's `put` (forwarded over the directory's Unix socket to the
//! leader, durable there) beside the leader's own `put`, in the same run,
//! on the same redb file. Prints a table and writes
//! `target/bench/shared_dir.json`.
//!
//! Goals: follower round-trip latency (one writer, median) <= the
//! leader's + 0.2 ms; follower throughput with 64 concurrent writers >=
//! 0.8x the leader's. Five alternating rounds; medians.

#[path = "../../topgun-storage/benches/support/mod.rs"]
mod support;

use serde_json::json;
use std::path::Path;
use std::time::Instant;
use topgun_client::{IMap, Role, TopGunClient};

const LATENCY_WRITES: usize = 1_000;
const ROUNDS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median round trip of `LATENCY_WRITES` sequential puts, in ms.
async fn latency(map: &IMap<Vec<u8>>, prefix: &str) -> f64 {
    let mut samples = Vec::with_capacity(LATENCY_WRITES);
    for i in 0..LATENCY_WRITES {
        let key = format!("{prefix}-{i}");
        let start = Instant::now();
        map.put(&key, support::value()).await.expect("put");
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    median(&mut samples)
}

/// Puts per second of 64 concurrent writers, `writes` in total.
async fn throughput(map: &IMap<Vec<u8>>, prefix: &str, writes: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..support::TASKS)
        .map(|t| {
            let map = map.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for i in 0..support::per_task(writes) {
                    let key = format!("{prefix}-{}", support::key(t, i));
                    map.put(&key, support::value()).await.expect("put");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    (support::TASKS * support::per_task(writes)) as f64 / start.elapsed().as_secs_f64()
}

async fn open(dir: &Path) -> TopGunClient {
    TopGunClient::builder()
        .shared_dir(dir)
        .build()
        .await
        .expect("open")
}

#[cfg(not(unix))]
fn main() {}

// A bench reports on stdout.
#[cfg(unix)]
#[allow(clippy::print_stdout)]
fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(async {
        let leader = open(dir.path()).await;
        let follower = open(dir.path()).await;
        assert_eq!(
            (leader.role(), follower.role()),
            (Role::Leader, Role::Follower)
        );
        let on_leader = leader.get_map::<Vec<u8>>("bench").expect("map");
        let on_follower = follower.get_map::<Vec<u8>>("bench").expect("map");
        // Warm both paths (file growth, socket buffers).
        latency(&on_leader, "warm-l").await;
        latency(&on_follower, "warm-f").await;
        // Rounds alternate between the two, so a machine that slows down
        // or speeds up during the run weighs on both alike; medians.
        let (mut lat, mut tput) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for round in 0..ROUNDS {
            for (who, map) in [&on_leader, &on_follower].into_iter().enumerate() {
                lat[who].push(latency(map, &format!("lat{who}-{round}")).await);
                let writes = support::WRITES / 2;
                tput[who].push(throughput(map, &format!("tp{who}-{round}"), writes).await);
            }
        }
        let [leader_ms, follower_ms] = lat.map(|mut v| median(&mut v));
        let [leader_tput, follower_tput] = tput.map(|mut v| median(&mut v));
        json!({
            "bench": "shared_dir",
            "put_latency_p50_ms": { "leader": leader_ms, "follower": follower_ms,
                "follower_extra_ms": follower_ms - leader_ms, "goal_extra_ms_max": 0.2 },
            "put64_per_s": { "leader": leader_tput, "follower": follower_tput,
                "ratio": follower_tput / leader_tput, "goal_ratio_min": 0.8 },
        })
    });
    let extra = report["put_latency_p50_ms"]["follower_extra_ms"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let ratio = report["put64_per_s"]["ratio"].as_f64().unwrap_or(f64::NAN);
    println!("shared data directory (follower through the leader's socket vs the leader):");
    println!(
        "  put latency p50: leader {:.3} ms, follower {:.3} ms (+{extra:.3} ms; goal <= +0.2)",
        report["put_latency_p50_ms"]["leader"]
            .as_f64()
            .unwrap_or(0.0),
        report["put_latency_p50_ms"]["follower"]
            .as_f64()
            .unwrap_or(0.0),
    );
    println!(
        "  64 concurrent puts: leader {:.0}/s, follower {:.0}/s ({ratio:.2}x; goal >= 0.8x)",
        report["put64_per_s"]["leader"].as_f64().unwrap_or(0.0),
        report["put64_per_s"]["follower"].as_f64().unwrap_or(0.0),
    );
    let out = support::out_dir();
    std::fs::create_dir_all(&out).expect("bench dir");
    std::fs::write(
        out.join("shared_dir.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write report");
}
