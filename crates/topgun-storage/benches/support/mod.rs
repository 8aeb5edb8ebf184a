//! What the storage and client benchmarks share: where they write their reports, and raw-redb
//! baselines with the same two inserts per write (a record and an op-log
//! entry) that a local write makes, without any of the store's logic.

// Shared by the storage and client crates' benches; each uses a part.
#![allow(dead_code)]

use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

/// `target/bench` of the workspace (each including crate is
/// `crates/<name>`, two levels below it), or of `CARGO_TARGET_DIR`.
pub(crate) fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("bench")
}

pub(crate) const TASKS: usize = 64;
pub(crate) const WRITES: usize = 20_000;
pub(crate) const VALUE_LEN: usize = 100;

pub(crate) const RECORDS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("bench_records");
pub(crate) const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("bench_ops");

pub(crate) fn value() -> Vec<u8> {
    vec![0xA5; VALUE_LEN]
}

pub(crate) fn key(task: usize, i: usize) -> String {
    format!("key-{task:02}-{i:06}")
}

pub(crate) fn per_task(writes: usize) -> usize {
    writes.div_ceil(TASKS)
}

/// Raw redb, one durable commit per write, 64 writers contending.
pub(crate) fn raw_one_commit_per_write(dir: &Path, writes: usize) -> f64 {
    let db = Arc::new(Database::create(dir.join("raw-single.redb")).expect("create db"));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..TASKS)
        .map(|t| {
            let db = db.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let v = value();
                for i in 0..per_task(writes) {
                    let k = key(t, i);
                    let mut tx = db.begin_write().expect("begin");
                    tx.set_durability(Durability::Immediate)
                        .expect("durability");
                    {
                        let id = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tx.open_table(RECORDS)
                            .expect("t")
                            .insert(("bench", k.as_str()), v.as_slice())
                            .expect("i");
                        tx.open_table(OPS)
                            .expect("t")
                            .insert(id, v.as_slice())
                            .expect("i");
                    }
                    tx.commit().expect("commit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let elapsed = start.elapsed().as_secs_f64();
    check_count(&db, TASKS * per_task(writes));
    (TASKS * per_task(writes)) as f64 / elapsed
}

struct Req {
    key: String,
    value: Vec<u8>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Raw redb with a minimal group-commit writer: the ceiling for RedbStore.
pub(crate) async fn raw_group_commit(dir: &Path, writes: usize) -> f64 {
    let db = Arc::new(Database::create(dir.join("raw-group.redb")).expect("create db"));
    let (tx, rx) = mpsc::channel::<Req>();
    let writer_db = db.clone();
    let writer = std::thread::spawn(move || {
        let mut next_id = 0u64;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let mut wtx = writer_db.begin_write().expect("begin");
            wtx.set_durability(Durability::Immediate)
                .expect("durability");
            {
                let mut records = wtx.open_table(RECORDS).expect("t");
                let mut ops = wtx.open_table(OPS).expect("t");
                for r in &batch {
                    records
                        .insert(("bench", r.key.as_str()), r.value.as_slice())
                        .expect("i");
                    ops.insert(next_id, r.value.as_slice()).expect("i");
                    next_id += 1;
                }
            }
            wtx.commit().expect("commit");
            for r in batch {
                let _ = r.done.send(());
            }
        }
    });
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..per_task(writes) {
                    let (done, wait) = tokio::sync::oneshot::channel();
                    tx.send(Req {
                        key: key(t, i),
                        value: value(),
                        done,
                    })
                    .expect("writer alive");
                    wait.await.expect("acked");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(tx);
    writer.join().expect("writer");
    check_count(&db, TASKS * per_task(writes));
    (TASKS * per_task(writes)) as f64 / elapsed
}

pub(crate) fn check_count(db: &Database, expected: usize) {
    use redb::ReadableTableMetadata;
    let rtx = db.begin_read().expect("read");
    let n = rtx.open_table(OPS).expect("t").len().expect("len");
    assert_eq!(n as usize, expected, "baseline wrote every op");
}

/// A record as a raw baseline stores it: the value and its timestamp,
/// MessagePack-encoded like the store's own records.
#[derive(serde::Serialize, serde::Deserialize)]
struct RawRecord {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    millis: u64,
    counter: u32,
    node_id: String,
}

/// Raw redb point reads + decode: `n` records of `value` written in one
/// transaction, then read back in a scattered order, each with its own
/// read transaction (as a store `get` does) and decoded. Returns reads/s.
pub(crate) fn raw_point_read_decode(dir: &Path, n: usize, value: &[u8]) -> f64 {
    let db = Database::create(dir.join("raw-reads.redb")).expect("create db");
    let tx = db.begin_write().expect("begin");
    {
        let mut t = tx.open_table(RECORDS).expect("table");
        for i in 0..n {
            let rec = RawRecord {
                value: value.to_vec(),
                millis: i as u64,
                counter: 0,
                node_id: "bench-node".into(),
            };
            let bytes = rmp_serde::to_vec_named(&rec).expect("encode");
            t.insert(("bench", format!("key-{i:07}").as_str()), bytes.as_slice())
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    let start = Instant::now();
    let mut found = 0usize;
    for i in 0..n {
        let k = format!("key-{:07}", (i * 7_919) % n);
        let rtx = db.begin_read().expect("read");
        let t = rtx.open_table(RECORDS).expect("table");
        if let Some(v) = t.get(("bench", k.as_str())).expect("get") {
            let rec: RawRecord = rmp_serde::from_slice(v.value()).expect("decode");
            let _: u64 = rmp_serde::from_slice(&rec.value).expect("decode value");
            found += 1;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert_eq!(found, n);
    rate
}
