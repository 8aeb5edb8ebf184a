//! `RedbStore`-specific behaviour: persistence across reopen, schema
//! versions, broken files, closing, and concurrent writers.
// Test helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "redb")]

use redb::{ReadableDatabase, TableDefinition, TableHandle};
use std::path::Path;
use std::sync::Arc;
use topgun_storage::conformance::{put, remote, ts};
use topgun_storage::{Durability, RedbStore, StorageError, Store, SUPPORTED_SCHEMA_VERSION};

const STORE_INFO: TableDefinition<'_, &str, u64> = TableDefinition::new("store_info");

fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    (dir, path)
}

async fn fill(store: &RedbStore) {
    for i in 0..5 {
        store
            .write_local(put("m", &format!("k{i}"), b"v", ts(i + 1)))
            .await
            .unwrap();
    }
    store
        .apply_remote(vec![remote("n", "r", Some(b"r"), ts(1))])
        .await
        .unwrap();
    store.mark_synced(&[1, 2]).await.unwrap();
    store.drop_synced_ops().await.unwrap();
    store.meta_put("node", b"a".to_vec()).await.unwrap();
}

#[tokio::test]
async fn reopen_keeps_data_counters_and_op_ids() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    fill(&store).await;
    let stats = store.stats().await.unwrap();
    let records = store.scan("m", None, 100).await.unwrap();
    let pending = store.pending_ops(None, 100).await.unwrap();
    store.close().await.unwrap();

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.stats().await.unwrap(), stats);
    assert_eq!(store.scan("m", None, 100).await.unwrap(), records);
    assert_eq!(store.pending_ops(None, 100).await.unwrap(), pending);
    assert_eq!(store.meta_get("node").await.unwrap().unwrap(), b"a");
    assert_eq!(store.map_names().await.unwrap(), ["m", "n"]);
    let id = store.write_local(put("m", "x", b"v", ts(9))).await.unwrap();
    assert_eq!(id, 6, "ids continue after the last one, dropped or not");
    drop(store);

    // Dropping closes the file too: it opens again at once.
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.stats().await.unwrap().pending_ops, 4);
}

#[tokio::test]
async fn op_ids_are_not_reused_after_dropping_every_op() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    let id = store.write_local(put("m", "k", b"v", ts(1))).await.unwrap();
    store.mark_synced(&[id]).await.unwrap();
    assert_eq!(store.drop_synced_ops().await.unwrap(), 1);
    store.close().await.unwrap();
    let store = RedbStore::open(&path).unwrap();
    let next = store.write_local(put("m", "k", b"v", ts(2))).await.unwrap();
    assert!(next > id);
}

#[tokio::test]
async fn closed_store_refuses_calls() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    store.write_local(put("m", "k", b"v", ts(1))).await.unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.write_local(put("m", "k", b"v", ts(2))).await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(
        store.get("m", "k").await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(store.stats().await, Err(StorageError::Closed)));
    // The file is released.
    let reopened = RedbStore::open(&path).unwrap();
    assert!(reopened.get("m", "k").await.unwrap().is_some());
}

#[tokio::test]
async fn a_file_open_elsewhere_is_a_locked_error() {
    let (_dir, path) = temp();
    let _store = RedbStore::open(&path).unwrap();
    let second = RedbStore::open(&path);
    assert!(
        matches!(&second, Err(StorageError::Locked { path: p }) if *p == path),
        "{second:?}"
    );
}

fn set_schema_version(path: &Path, version: Option<u64>) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut info = txn.open_table(STORE_INFO).unwrap();
        match version {
            Some(v) => {
                info.insert("__schema_version", v).unwrap();
            }
            None => {
                // An unversioned file: no version, no counters.
                info.retain(|_, _| false).unwrap();
            }
        }
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    store.write_local(put("m", "k", b"v", ts(1))).await.unwrap();
    store.close().await.unwrap();
    set_schema_version(&path, Some(u64::from(SUPPORTED_SCHEMA_VERSION) + 1));
    let before = std::fs::read(&path).unwrap();

    let error = RedbStore::open(&path).unwrap_err();
    assert!(
        matches!(error, StorageError::SchemaTooNew { found, supported }
            if found == SUPPORTED_SCHEMA_VERSION + 1 && supported == SUPPORTED_SCHEMA_VERSION),
        "{error:?}"
    );
    assert!(error.to_string().contains("newer"));
    assert!(std::fs::read(&path).unwrap() == before, "file was modified");
}

#[tokio::test]
async fn an_unversioned_file_is_migrated_and_its_counters_rebuilt() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    fill(&store).await;
    let stats = store.stats().await.unwrap();
    store.close().await.unwrap();
    set_schema_version(&path, None);

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.stats().await.unwrap(), stats);
    let id = store.write_local(put("m", "x", b"v", ts(9))).await.unwrap();
    assert_eq!(id, 6);
    store.close().await.unwrap();
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let info = txn.open_table(STORE_INFO).unwrap();
    let version = info.get("__schema_version").unwrap().unwrap().value();
    assert_eq!(version, u64::from(SUPPORTED_SCHEMA_VERSION));
}

/// Schema version 1 had no Merkle leaf sums: opening such a file computes
/// them from its records.
#[tokio::test]
async fn a_version_1_file_gets_its_merkle_leaf_sums_computed() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    fill(&store).await;
    let maps = store.map_names().await.unwrap();
    let mut sums = Vec::new();
    for map in &maps {
        sums.push(store.merkle_leaves(map).await.unwrap());
    }
    assert!(sums.iter().all(|s| s.iter().any(|&x| x != 0)));
    store.close().await.unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let merkle: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("merkle_leaves");
        let pruned: TableDefinition<'_, (&str, &str), u32> =
            TableDefinition::new("pruned_contributions");
        // A clean close saved the sums.
        let info = txn.open_table(STORE_INFO).unwrap();
        assert_eq!(
            redb::ReadableTable::get(&info, "merkle_saved")
                .unwrap()
                .unwrap()
                .value(),
            1
        );
        drop(info);
        txn.delete_table(merkle).unwrap();
        txn.delete_table(pruned).unwrap();
        let mut info = txn.open_table(STORE_INFO).unwrap();
        info.insert("__schema_version", 1).unwrap();
        info.remove("merkle_saved").unwrap();
        info.remove("pruned_stubs").unwrap();
        drop(info);
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    for (map, expected) in maps.iter().zip(&sums) {
        assert!(
            store.merkle_leaves(map).await.unwrap() == *expected,
            "{map}"
        );
    }
}

/// Schema version 2 kept records by `(map, key)` in `records`; version 3
/// by `(map, bucket, key)` in `records_by_bucket`. Opening a version-2
/// file moves them: the same records, stats, scans and Merkle sums, and
/// the old table is gone.
#[tokio::test]
async fn a_version_2_file_has_its_records_moved_into_buckets() {
    let by_key: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("records");
    let by_bucket: TableDefinition<'_, (&str, u8, &str), &[u8]> =
        TableDefinition::new("records_by_bucket");
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    fill(&store).await;
    for i in 0..300 {
        store
            .apply_remote(vec![remote("big", &format!("key-{i}"), Some(b"x"), ts(7))])
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    let maps = store.map_names().await.unwrap();
    let mut before = Vec::new();
    for map in &maps {
        before.push((
            store.scan(map, None, 1000).await.unwrap(),
            store.merkle_leaves(map).await.unwrap(),
        ));
    }
    store.close().await.unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let new = txn.open_table(by_bucket).unwrap();
            let mut old = txn.open_table(by_key).unwrap();
            for row in redb::ReadableTable::iter(&new).unwrap() {
                let (slot, value) = row.unwrap();
                let (map, _, key) = slot.value();
                old.insert((map, key), value.value()).unwrap();
            }
        }
        txn.delete_table(by_bucket).unwrap();
        let mut info = txn.open_table(STORE_INFO).unwrap();
        info.insert("__schema_version", 2).unwrap();
        drop(info);
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.stats().await.unwrap(), stats);
    assert_eq!(store.map_names().await.unwrap(), maps);
    for (map, (records, leaves)) in maps.iter().zip(&before) {
        assert_eq!(
            &store.scan(map, None, 1000).await.unwrap(),
            records,
            "{map}"
        );
        assert!(store.merkle_leaves(map).await.unwrap() == *leaves, "{map}");
    }
    assert_eq!(
        store
            .get("big", "key-7")
            .await
            .unwrap()
            .unwrap()
            .value
            .unwrap(),
        b"x"
    );
    store.close().await.unwrap();
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.list_tables().unwrap().all(|t| t.name() != "records"));
}

/// Builds before "RedbStore: no dirty index" kept a `dirty` table in
/// schema version 1; opening such a file deletes it and keeps the data.
#[tokio::test]
async fn a_legacy_dirty_index_is_deleted_on_open() {
    let dirty: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("dirty");
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    fill(&store).await;
    let stats = store.stats().await.unwrap();
    store.close().await.unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(dirty)
            .unwrap()
            .insert(("m", "k2"), ())
            .unwrap();
        txn.commit().unwrap();
    }

    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.stats().await.unwrap(), stats);
    let listed = store.dirty_records("m", None, 9).await.unwrap();
    assert_eq!(listed.len() as u64, stats.dirty_records);
    store.close().await.unwrap();
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.list_tables().unwrap().all(|t| t.name() != "dirty"));
}

#[tokio::test]
async fn a_foreign_redb_file_gets_the_store_tables() {
    let (_dir, path) = temp();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let other: TableDefinition<'_, u64, u64> = TableDefinition::new("something_else");
        txn.open_table(other).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    store.write_local(put("m", "k", b"v", ts(1))).await.unwrap();
    assert_eq!(store.stats().await.unwrap().records, 1);
}

#[test]
fn garbage_and_truncated_files_are_errors_not_panics() {
    let (_dir, path) = temp();
    std::fs::write(
        &path,
        b"this is not a redb file, just some bytes".repeat(200),
    )
    .unwrap();
    let error = RedbStore::open(&path).unwrap_err();
    assert!(matches!(error, StorageError::Backend { .. }), "{error:?}");

    // A real store, truncated at several lengths.
    let (_dir2, good) = temp();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = RedbStore::open(&good).unwrap();
        for i in 0..200 {
            let value = vec![7_u8; 300];
            store
                .write_local(put("m", &format!("key-{i}"), &value, ts(i + 1)))
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    });
    let bytes = std::fs::read(&good).unwrap();
    for len in [1, 100, 600, 4096, bytes.len() / 2] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let result = RedbStore::open(&path);
        assert!(result.is_err(), "truncated to {len} bytes: opened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits() {
    let (_dir, path) = temp();
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let mut tasks = Vec::new();
    for task in 0..64_u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..30 {
                let w = put(
                    &format!("m{}", task % 4),
                    &format!("{task}-{i}"),
                    b"v",
                    ts(i + 1),
                );
                ids.push(store.write_local(w).await.unwrap());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        ids.extend(mine);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64 * 30);
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.records, stats.dirty_records, stats.pending_ops),
        (1920, 1920, 1920)
    );
}

#[tokio::test]
async fn eventual_durability_persists_on_clean_close() {
    let (_dir, path) = temp();
    let store = RedbStore::builder()
        .durability(Durability::Eventual)
        .cache_size(16 << 20)
        .open(&path)
        .unwrap();
    store.write_local(put("m", "k", b"v", ts(1))).await.unwrap();
    store.close().await.unwrap();
    let store = RedbStore::open(&path).unwrap();
    assert!(store.get("m", "k").await.unwrap().is_some());
}

/// The leaf sums a map's records give.
async fn sums_of_records(store: &RedbStore, map: &str) -> Vec<u32> {
    let mut sums = vec![0u32; topgun_core::merkle::LEAVES];
    for r in store.scan(map, None, usize::MAX).await.unwrap() {
        let t = &r.timestamp;
        let (leaf, c) =
            topgun_core::MerkleSums::contribution(&r.key, t.millis, t.counter, &t.node_id);
        topgun_core::MerkleSums::shift(&mut sums, leaf, 0, c);
    }
    sums
}

/// A store opened without leaf sums still marks saved ones stale when it
/// writes, so the next store that keeps them recomputes them.
#[tokio::test]
async fn writes_without_leaf_sums_make_the_saved_ones_stale() {
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    store.write_local(put("m", "a", b"1", ts(1))).await.unwrap();
    store.close().await.unwrap();
    let plain = RedbStore::builder().merkle_sums(false).open(&path).unwrap();
    assert!(matches!(
        plain.merkle_leaves("m").await,
        Err(StorageError::InvalidInput(_))
    ));
    plain.write_local(put("m", "b", b"2", ts(2))).await.unwrap();
    plain.close().await.unwrap();
    let store = RedbStore::open(&path).unwrap();
    let expected = sums_of_records(&store, "m").await;
    assert!(store.merkle_leaves("m").await.unwrap() == expected);
}

/// Records pruned to save space stay counted and known as pruned across a
/// restart; records dropped for a reset leave the sums.
#[tokio::test]
async fn pruned_records_stay_counted_across_a_restart_and_dropped_ones_do_not() {
    use topgun_storage::PruneSums;
    let (_dir, path) = temp();
    let store = RedbStore::open(&path).unwrap();
    let records = ["a", "b", "c"].map(|k| remote("m", k, Some(b"v"), ts(5)));
    store.apply_remote(records.to_vec()).await.unwrap();
    let full = store.merkle_leaves("m").await.unwrap();
    let keep = ["a".to_owned()];
    assert_eq!(
        store
            .prune_clean("m", &keep, PruneSums::Keep)
            .await
            .unwrap(),
        keep
    );
    store.close().await.unwrap();

    let store = RedbStore::open(&path).unwrap();
    assert!(store.is_pruned("m", "a").await.unwrap());
    assert!(!store.is_pruned("m", "b").await.unwrap());
    assert!(
        store.merkle_leaves("m").await.unwrap() == full,
        "a still counts"
    );
    let drop = ["b".to_owned()];
    assert_eq!(
        store
            .prune_clean("m", &drop, PruneSums::Drop)
            .await
            .unwrap(),
        drop
    );
    assert!(
        store.merkle_leaves("m").await.unwrap() != full,
        "b no longer counts"
    );
    // Writing a pruned key again replaces its contribution.
    store
        .apply_remote(vec![remote("m", "a", Some(b"w"), ts(9))])
        .await
        .unwrap();
    assert!(!store.is_pruned("m", "a").await.unwrap());
    let expected = sums_of_records(&store, "m").await;
    assert!(store.merkle_leaves("m").await.unwrap() == expected);
}
