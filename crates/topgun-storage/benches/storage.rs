//! Storage benchmark (`cargo xtask bench storage`).
//!
//! Scenario: 64 concurrent tasks perform 20,000 durable local writes in
//! total (each write = one record insert + one op-log append) through
//! [`RedbStore`], compared in the same run with two raw-redb baselines on
//! the same machine and disk:
//! - **one commit per write**: each write is its own durable transaction
//!   (what a naive store does);
//! - **raw group commit**: a minimal writer thread that drains every queued
//!   write into one durable transaction (the ceiling for this design).
//!
//! Goals: `RedbStore` >= 5x the one-commit-per-write baseline and >= 0.8x
//! the raw group-commit baseline. Prints a table and writes
//! `target/bench/storage.json`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use support::{key, per_task, raw_group_commit, raw_one_commit_per_write, value, TASKS, WRITES};
use topgun_core::Timestamp;
use topgun_storage::{LocalWrite, OpType, RedbStore, Store};

/// The real thing: `RedbStore::write_local` from 64 tasks.
async fn redb_store(dir: &Path, writes: usize) -> f64 {
    let store = Arc::new(RedbStore::open(dir.join("store.redb")).expect("open store"));
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_task(writes) {
                    let write = LocalWrite {
                        map_name: "bench".into(),
                        key: key(t, i),
                        op_type: OpType::Put,
                        value: Some(value()),
                        timestamp: Timestamp::new(
                            1_700_000_000_000 + i as u64,
                            t as u32,
                            "bench-node",
                        ),
                        ttl_ms: None,
                    };
                    store.write_local(write).await.expect("write");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        stats.pending_ops as usize,
        TASKS * per_task(writes),
        "every write is in the op log"
    );
    (TASKS * per_task(writes)) as f64 / elapsed
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let writes: usize = std::env::var("TOPGUN_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WRITES);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    // The one-commit-per-write baseline pays an fsync per write; it runs the
    // same workload, and its rate is what the ratio compares.
    let single = raw_one_commit_per_write(dir.path(), writes);
    let group = rt.block_on(raw_group_commit(dir.path(), writes));
    let store = rt.block_on(redb_store(dir.path(), writes));

    let vs_single = store / single;
    let vs_group = store / group;
    let rows = [
        ("raw redb, one commit per write", single),
        ("raw redb, group commit", group),
        ("RedbStore::write_local", store),
    ];
    eprintln!("\nstorage: {TASKS} tasks, {writes} durable writes (record + op each)");
    eprintln!("{:<34} {:>12}", "scenario", "writes/s");
    for (name, rate) in rows {
        eprintln!("{name:<34} {rate:>12.0}");
    }
    eprintln!("RedbStore / one-commit-per-write = {vs_single:.2}x (goal >= 5x)");
    eprintln!("RedbStore / raw group commit     = {vs_group:.2}x (goal >= 0.8x)");

    let json = format!(
        concat!(
            "{{\n  \"scenario\": \"{} tasks, {} durable local writes\",\n",
            "  \"raw_one_commit_per_write_per_s\": {:.0},\n",
            "  \"raw_group_commit_per_s\": {:.0},\n",
            "  \"redb_store_per_s\": {:.0},\n",
            "  \"ratio_vs_one_commit_per_write\": {:.3},\n",
            "  \"ratio_vs_raw_group_commit\": {:.3},\n",
            "  \"goal_vs_one_commit_per_write\": 5.0,\n",
            "  \"goal_vs_raw_group_commit\": 0.8\n}}\n"
        ),
        TASKS, writes, single, group, store, vs_single, vs_group
    );
    let out = support::out_dir();
    std::fs::create_dir_all(&out).expect("create target/bench");
    std::fs::write(out.join("storage.json"), json).expect("write storage.json");
    eprintln!("wrote {}", out.join("storage.json").display());
}
