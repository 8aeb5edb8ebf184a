//! Crash consistency of `RedbStore`: a child process writes from many
//! tasks and prints every acknowledged write; the parent kills it with
//! SIGKILL at a random moment, reopens the file, and checks that every
//! acknowledged write survived and that records and op log agree.
//!
//! The child is this test binary itself, re-executed to run only
//! `crash_child_writer` with `TOPGUN_CRASH_CHILD_DB` set; without that
//! variable that test does nothing.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "redb", unix))]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use topgun_core::Timestamp;
use topgun_storage::conformance::{put, remote, remove};
use topgun_storage::{OpId, OpType, RedbStore, Store};

const CHILD_DB: &str = "TOPGUN_CRASH_CHILD_DB";
const CHILD_CLOCK: &str = "TOPGUN_CRASH_CHILD_CLOCK";
const TASKS: u64 = 24;
const ROUNDS: u64 = 5;

fn map_of(task: u64) -> String {
    format!("m{}", task % 3)
}
fn key_of(task: u64, seq: u64) -> String {
    format!("t{task}-{}", seq % 16)
}
fn value_of(task: u64, seq: u64) -> Vec<u8> {
    format!("{task}:{seq}").into_bytes()
}
fn is_remove(seq: u64) -> bool {
    seq % 7 == 6
}
fn stamp(millis: u64) -> Timestamp {
    Timestamp::new(millis, 0, "crash")
}

/// The child: writes until killed (or 30 s pass), printing
/// `W <op id> <task> <seq> <millis>` after each acknowledged local write,
/// `R <task> <millis>` after each acknowledged remote record, and
/// `S <ids…>` *before* marking ops synced.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return; // run as a normal test: nothing to do
    };
    let clock: u64 = std::env::var(CHILD_CLOCK).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(RedbStore::open(&path).unwrap());
        let clock = Arc::new(AtomicU64::new(clock));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let (store, clock) = (store.clone(), clock.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut seq = 0;
                while Instant::now() < deadline {
                    let millis = clock.fetch_add(1, Ordering::SeqCst);
                    let (map, key) = (map_of(task), key_of(task, seq));
                    if task % 6 == 5 && seq % 4 == 3 {
                        let record = remote("r", &format!("t{task}"), Some(b"r"), stamp(millis));
                        store.apply_remote(vec![record]).await.unwrap();
                        emit(&format!("R {task} {millis}"));
                    } else {
                        let write = if is_remove(seq) {
                            remove(&map, &key, stamp(millis))
                        } else {
                            put(&map, &key, &value_of(task, seq), stamp(millis))
                        };
                        let id = store.write_local(write).await.unwrap();
                        emit(&format!("W {id} {task} {seq} {millis}"));
                        acked.push(id);
                    }
                    if seq % 10 == 9 && acked.len() >= 5 {
                        let ids: Vec<OpId> = acked.drain(..).rev().take(5).collect();
                        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
                        emit(&format!("S {}", list.join(" ")));
                        store.mark_synced(&ids).await.unwrap();
                    }
                    seq += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// What a killed child acknowledged.
#[derive(Debug, Default)]
struct Acks {
    /// op id → (task, seq, millis)
    writes: BTreeMap<OpId, (u64, u64, u64)>,
    /// ops that may have been marked synced
    maybe_synced: BTreeSet<OpId>,
    /// task → newest acknowledged remote millis
    remotes: HashMap<u64, u64>,
}

fn parse(lines: &[String], acks: &mut Acks) {
    for line in lines {
        let fields: Vec<u64> = line
            .split(' ')
            .skip(1)
            .map(|f| f.parse().unwrap())
            .collect();
        match line.split(' ').next() {
            Some("W") => {
                acks.writes
                    .insert(fields[0], (fields[1], fields[2], fields[3]));
            }
            Some("S") => acks.maybe_synced.extend(fields),
            Some("R") => {
                let newest = acks.remotes.entry(fields[0]).or_default();
                *newest = (*newest).max(fields[1]);
            }
            _ => {} // libtest's own output
        }
    }
}

/// Runs the child until a random moment after its first acknowledgement,
/// kills it, and returns the complete lines it printed.
fn run_and_kill(path: &Path, clock: u64, delay: Duration) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DB, path)
        .env(CHILD_CLOCK, clock.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            // A line cut by the kill has no newline: it was not printed.
            if let Some(done) = line.strip_suffix('\n') {
                if done.starts_with("W ") && lines.is_empty() {
                    let _ = first_tx.send(());
                }
                if done.starts_with(['W', 'S', 'R']) {
                    lines.push(done.to_owned());
                }
            }
            line.clear();
        }
        lines
    });
    first_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the child acknowledged no write within 10 s");
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

async fn verify(store: &RedbStore, acks: &Acks) {
    // The Merkle leaf sums agree with the records that survived (a killed
    // store recomputes them when it opens: its `merkle_saved` was cleared
    // by its first write, in that write's transaction).
    for map in store.map_names().await.unwrap() {
        let mut expected = vec![0u32; topgun_core::merkle::LEAVES];
        for r in store.scan(&map, None, usize::MAX).await.unwrap() {
            let t = &r.timestamp;
            let (leaf, c) =
                topgun_core::MerkleSums::contribution(&r.key, t.millis, t.counter, &t.node_id);
            expected[leaf] = expected[leaf].wrapping_add(c);
        }
        assert!(
            store.merkle_leaves(&map).await.unwrap() == expected,
            "the leaf sums of {map} disagree with its records"
        );
    }
    let pending: BTreeMap<OpId, _> = store
        .pending_ops(None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|op| (op.id, op))
        .collect();

    // Every acknowledged write is there, or a newer one.
    for (&id, &(task, seq, millis)) in &acks.writes {
        let (map, key) = (map_of(task), key_of(task, seq));
        let record = store
            .get(&map, &key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged op {id} ({map}/{key}) lost its record"));
        assert!(
            record.timestamp.millis >= millis,
            "op {id}: record older than the ack"
        );
        if record.timestamp.millis == millis {
            let expected = (!is_remove(seq)).then(|| value_of(task, seq));
            assert_eq!(record.value, expected, "op {id}: wrong value");
        }
        match pending.get(&id) {
            Some(op) => {
                assert_eq!(
                    (op.map_name.as_str(), op.key.as_str()),
                    (map.as_str(), key.as_str())
                );
                assert_eq!(op.timestamp.millis, millis, "op {id}");
            }
            None => assert!(
                acks.maybe_synced.contains(&id),
                "acknowledged op {id} is missing from the log"
            ),
        }
    }
    for (task, &millis) in &acks.remotes {
        let record = store.get("r", &format!("t{task}")).await.unwrap().unwrap();
        assert!(record.timestamp.millis >= millis);
    }

    // Records and op log agree; counters match the data.
    let mut records = 0;
    let mut dirty = 0;
    let mut bytes = 0;
    for map in store.map_names().await.unwrap() {
        for record in store.scan(&map, None, usize::MAX).await.unwrap() {
            records += 1;
            bytes += record.approx_size();
            if record.dirty {
                dirty += 1;
                let has_op = pending.values().any(|op| {
                    op.map_name == record.map_name
                        && op.key == record.key
                        && op.timestamp == record.timestamp
                });
                assert!(
                    has_op,
                    "dirty record {map}/{} has no pending op",
                    record.key
                );
            }
        }
        let listed = store.dirty_records(&map, None, usize::MAX).await.unwrap();
        assert!(listed.iter().all(|r| r.dirty));
    }
    for op in pending.values() {
        assert_ne!(op.op_type, OpType::Clear);
        let record = store.get(&op.map_name, &op.key).await.unwrap();
        let record = record.unwrap_or_else(|| panic!("pending op {} has no record", op.id));
        assert!(record.timestamp >= op.timestamp);
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.records, records);
    assert_eq!(stats.dirty_records, dirty);
    assert_eq!(stats.pending_ops, pending.len() as u64);
    let pending_bytes: u64 = pending.values().map(|op| op.approx_size()).sum();
    assert!(stats.bytes >= bytes + pending_bytes);
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("crash.redb");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    println!("crash test seed {seed}");
    let mut rng = u64::from(seed) | 1;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut acks = Acks::default();
    let mut last_id = 0;
    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(20 + rng % 400);
        let lines = run_and_kill(&path, (round + 1) * 1_000_000_000, delay);
        let before = acks.writes.len();
        parse(&lines, &mut acks);
        let new_ids: Vec<OpId> = acks
            .writes
            .keys()
            .copied()
            .filter(|&id| id > last_id)
            .collect();
        assert_eq!(
            new_ids.len(),
            acks.writes.len() - before,
            "an op id was reused"
        );
        println!(
            "round {round}: killed after {delay:?}, {} writes acknowledged",
            new_ids.len()
        );
        last_id = acks.writes.keys().last().copied().unwrap_or(last_id);

        runtime.block_on(async {
            let store = RedbStore::open(&path).unwrap();
            verify(&store, &acks).await;
            store.close().await.unwrap();
        });
    }
}
