//! Client data dirs made and read in-process: pending puts written
//! through a `TopGunClient` (one CLI process per op would take minutes),
//! and every record of a map read back from the redb file (or a server's
//! files).

use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use topgun_client::TopGunClient;
use topgun_storage::{RedbStore, Store, StoreRecord};

/// A map's records, by key.
pub type Records = BTreeMap<String, StoreRecord>;

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Every record of `map` in the redb store at `path` (opened and closed).
pub fn read_store(path: &Path, map: &str) -> (Records, topgun_storage::StoreStats) {
    block_on(async {
        let store = RedbStore::open(path).unwrap();
        let mut records = Records::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(map, after.as_deref(), 1_000).await.unwrap();
            let done = page.len() < 1_000;
            after = page.last().map(|r| r.key.clone());
            records.extend(page.into_iter().map(|r| (r.key.clone(), r)));
            if done {
                break;
            }
        }
        let stats = store.stats().await.unwrap();
        store.close().await.unwrap();
        (records, stats)
    })
}

/// Every record of `map` in the server data dir `dir`, over all its commit
/// lanes (one redb file each).
pub fn read_server_dir(dir: &Path, map: &str) -> Records {
    let lanes = topgun_server::store::data_dir_lanes(dir)
        .unwrap()
        .expect("a server data dir");
    let mut records = Records::new();
    for lane in 0..lanes {
        let path = topgun_server::store::lane_file(dir, lane);
        records.extend(read_store(&path, map).0);
    }
    records
}

/// A client data dir with `count` pending puts to `map` (keys `k00000`…,
/// `count` a multiple of 50), written concurrently so they share commits.
pub fn write_pending_puts(dir: &Path, map: &str, count: usize) -> Records {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("topgun.redb");
    block_on(async {
        let store = std::sync::Arc::new(RedbStore::open(&path).unwrap());
        let client = TopGunClient::builder()
            .store(store.clone())
            .build()
            .await
            .unwrap();
        let imap = client.get_json_map(map).unwrap();
        let per_chunk = count / 50;
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in 0..50 {
            let imap = imap.clone();
            tasks.spawn(async move {
                for i in chunk * per_chunk..(chunk + 1) * per_chunk {
                    let value = json!({"n": i, "pad": "x".repeat(100)});
                    imap.put(&format!("k{i:05}"), value).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(client.pending_ops().await.unwrap(), count as u64);
        client.close().await;
        drop(imap);
        drop(client);
        store.close().await.unwrap();
    });
    let (records, _) = read_store(&path, map);
    assert_eq!(records.len(), count);
    records
}

/// Each server record equals the client's: same value bytes and the same
/// timestamp (an op applied twice, or re-stamped, would differ).
pub fn assert_same_records(server: &Records, client: &Records, what: &str) {
    for (key, record) in server {
        let mine = client
            .get(key)
            .unwrap_or_else(|| panic!("{what}: unknown key {key}"));
        assert_eq!(
            record.timestamp, mine.timestamp,
            "{what}: timestamp of {key}"
        );
        assert_eq!(record.value, mine.value, "{what}: value of {key}");
        assert_eq!(record.ttl_ms, mine.ttl_ms, "{what}: ttl of {key}");
    }
}
